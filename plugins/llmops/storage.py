"""S3 operations of the receive and stage steps: list, JSON documents, quarantine, staging.

Every write is server-side and additive:

- :func:`quarantine_drop` copies every object of a rejected drop to
  ``quarantine/<model>/<revision>/...`` in the drops bucket and writes a ``reason.json``
  naming each bad file. Nothing is deleted from the drop.
- :func:`stage_drop` copies a verified drop into the models bucket under a content-addressed
  prefix ``models/<model>/sha256-<weight digest>/<path>``, each object carrying its SHA-256 as
  metadata (``x-amz-meta-sha256``). Objects of at least ``part_size`` bytes are copied with a
  multipart upload of ranged ``upload_part_copy`` calls (no byte passes through this process),
  smaller ones with ``copy_object``. A re-run skips objects already present with the expected
  size and SHA-256, resumes an interrupted multipart copy from its finished parts, and is a
  no-op once ``_staged.json`` (written last) records the completed staging.

Copies of a verified drop may pass the ETags that verification read
(``source_etags``): S3 then refuses the copy (``PreconditionFailed``) if an object changed
after it was verified. moto accepts and ignores that precondition.

boto3 clients are thread-safe; give the client ``max_pool_connections`` >= ``workers``
(botocore's default pool is 10) or urllib3 warns that its pool is full.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from llmops.manifests import (
    MANIFEST_NAME,
    QUARANTINE_PREFIX,
    STAGED_MARKER,
    ManifestFile,
    WeightDropManifest,
    parse_drop_manifest,
    weight_digest,
)

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
"""S3's smallest part (all but the last)."""
MAX_PARTS = 10_000
"""S3's largest part count per multipart upload."""
MAX_SINGLE_COPY = 5 * 1024 * MiB
"""S3's largest ``copy_object`` source."""
DEFAULT_PART_SIZE = 64 * MiB
DEFAULT_WORKERS = 8

REASON_NAME = "reason.json"
STAGED_ROOT = "models/"
SHA256_META = "sha256"
"""Metadata key (``x-amz-meta-sha256``) of each staged object's SHA-256."""
DIGEST_META = "weight-digest"
SOURCE_ETAG_META = "quarantine-source-etag"


class StorageError(RuntimeError):
    """An S3 operation of receive/stage could not complete; the message names the object and the fix."""


@dataclass(frozen=True)
class S3Object:
    """One listed object."""

    key: str
    size: int
    etag: str


# ---------------------------------------------------------------------------------------------
# Locations


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; the key may be empty or a prefix."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ValueError(f"{uri!r} is not an s3:// URI; fix: write s3://<bucket>/<key or prefix>")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def s3_uri(bucket: str, key: str = "") -> str:
    """``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def drop_prefix(model: str, revision: str) -> str:
    """The key prefix of a drop in the drops bucket: ``<model>/<revision>/``."""
    return f"{model}/{revision}/"


def split_drop_prefix(prefix: str) -> tuple[str, str]:
    """``<model>/<revision>/`` -> ``(model, revision)``."""
    parts = prefix.strip("/").split("/")
    if len(parts) != 2 or not all(parts) or prefix.startswith(QUARANTINE_PREFIX):
        raise ValueError(f"{prefix!r} is not a drop prefix; fix: use <model>/<revision>/")
    return parts[0], parts[1]


def quarantine_prefix(prefix: str) -> str:
    """Where :func:`quarantine_drop` copies the drop at ``prefix``: ``quarantine/<model>/<revision>/``."""
    return QUARANTINE_PREFIX + prefix.strip("/") + "/"


def staged_prefix(model: str, digest: str) -> str:
    """The content-addressed prefix of a staged drop: ``models/<model>/sha256-<digest>/``."""
    return f"{STAGED_ROOT}{model}/sha256-{digest}/"


# ---------------------------------------------------------------------------------------------
# Listing and JSON documents


def list_prefix(s3: Any, bucket: str, prefix: str) -> list[S3Object]:
    """Every object under ``prefix`` (all pages), sorted by key."""
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            objects.append(S3Object(key=obj["Key"], size=int(obj["Size"]), etag=obj.get("ETag", "")))
    return sorted(objects, key=lambda o: o.key)


def head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """``head_object``'s answer, or ``None`` when the object does not exist."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def read_json(s3: Any, bucket: str, key: str) -> Any:
    """The parsed JSON document at ``s3://bucket/key``.

    Raises ``FileNotFoundError`` (no such object) or ``ValueError`` (not JSON), naming the URI.
    """
    uri = s3_uri(bucket, key)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            raise FileNotFoundError(f"{uri}: no such object; fix: check the bucket and key") from exc
        raise
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{uri}: not valid JSON ({exc}); fix: rewrite it as UTF-8 JSON") from exc


def write_json(s3: Any, bucket: str, key: str, payload: Any) -> str:
    """Write ``payload`` as JSON to ``s3://bucket/key`` with one PUT (readers see all or nothing).

    Returns the new object's ETag.
    """
    body = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode()
    answer = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return str(answer.get("ETag", ""))


def read_drop_manifest(s3: Any, bucket: str, prefix: str) -> WeightDropManifest:
    """Read and validate ``<prefix>manifest.json``; its model and revision must match the prefix.

    Raises ``FileNotFoundError`` / ``ValueError`` (see :func:`read_json`) or
    :class:`llmops.manifests.ManifestError`.
    """
    model, revision = split_drop_prefix(prefix)
    key = drop_prefix(model, revision) + MANIFEST_NAME
    data = read_json(s3, bucket, key)
    return parse_drop_manifest(data, s3_uri(bucket, key), expect_model=model, expect_revision=revision)


def is_not_found(exc: ClientError) -> bool:
    """True when ``exc`` says the bucket or key does not exist."""
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


# ---------------------------------------------------------------------------------------------
# Server-side copies


@dataclass(frozen=True)
class CopyJob:
    """One server-side copy."""

    src_bucket: str
    src_key: str
    dst_bucket: str
    dst_key: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    source_etag: str | None = None


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """Inclusive byte ranges of the parts of a ``size``-byte object.

    The part size grows beyond ``part_size`` when needed to stay within S3's 10,000 parts.
    """
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size {part_size} is below S3's minimum part of {MIN_PART_SIZE} bytes; "
                         f"fix: use at least 5 MiB")
    part = max(part_size, math.ceil(size / MAX_PARTS))
    return [(start, min(start + part, size) - 1) for start in range(0, size, part)]


def copy_objects(s3: Any, jobs: Sequence[CopyJob], *, part_size: int = DEFAULT_PART_SIZE,
                 workers: int = DEFAULT_WORKERS, resume: bool = False) -> dict[str, int]:
    """Copy every job server-side, in parallel; return ``dst_key -> parts`` (0 for a single copy).

    Objects of at least ``part_size`` bytes (or above S3's 5 GiB single-copy limit) take a
    multipart upload whose ranged part copies run in the same thread pool as the small copies.
    With ``resume`` (only for destinations whose content is fixed by their key), an unfinished
    multipart upload to the same key is continued: its finished parts of the right size are kept.
    """
    if part_size > MAX_SINGLE_COPY:
        raise ValueError(f"part_size {part_size} exceeds S3's 5 GiB copy limit; fix: use a smaller part size")
    threshold = part_size
    singles: list[CopyJob] = []
    uploads: list[_Multipart] = []
    for job in jobs:
        if job.size >= threshold and job.size > 0:
            uploads.append(_open_multipart(s3, job, part_size, resume))
        else:
            singles.append(job)
    tasks: list[tuple[Any, ...]] = [("single", job) for job in singles]
    for upload in uploads:
        tasks.extend(("part", upload, number) for number in upload.todo)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="s3copy") as pool:
        for _ in pool.map(lambda task: _run_copy_task(s3, task), tasks):
            pass
    result = {job.dst_key: 0 for job in singles}
    for upload in uploads:
        parts = [{"PartNumber": n, "ETag": upload.etags[n]} for n in sorted(upload.etags)]
        s3.complete_multipart_upload(Bucket=upload.job.dst_bucket, Key=upload.job.dst_key,
                                     UploadId=upload.upload_id, MultipartUpload={"Parts": parts})
        result[upload.job.dst_key] = len(parts)
    return result


@dataclass
class _Multipart:
    job: CopyJob
    upload_id: str
    ranges: list[tuple[int, int]]
    etags: dict[int, str]
    todo: list[int]


def _open_multipart(s3: Any, job: CopyJob, part_size: int, resume: bool) -> _Multipart:
    ranges = part_ranges(job.size, part_size)
    pending = _uploads_of(s3, job.dst_bucket, job.dst_key)
    upload_id = None
    etags: dict[int, str] = {}
    if resume and pending:
        newest = max(pending, key=lambda u: u["Initiated"])
        upload_id = newest["UploadId"]
        for part in _parts_of(s3, job.dst_bucket, job.dst_key, upload_id):
            number = int(part["PartNumber"])
            if 1 <= number <= len(ranges):
                start, end = ranges[number - 1]
                if int(part["Size"]) == end - start + 1:
                    etags[number] = part["ETag"]
        pending = [u for u in pending if u["UploadId"] != upload_id]
        log.info("resuming multipart copy to %s: %d of %d parts done", job.dst_key, len(etags), len(ranges))
    for stale in pending:  # unfinished uploads to this key that will never complete
        s3.abort_multipart_upload(Bucket=job.dst_bucket, Key=job.dst_key, UploadId=stale["UploadId"])
    if upload_id is None:
        extra = {"ContentType": job.content_type} if job.content_type else {}
        upload_id = s3.create_multipart_upload(Bucket=job.dst_bucket, Key=job.dst_key, Metadata=job.metadata,
                                               **extra)["UploadId"]
    todo = [n for n in range(1, len(ranges) + 1) if n not in etags]
    return _Multipart(job=job, upload_id=upload_id, ranges=ranges, etags=etags, todo=todo)


def _uploads_of(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    uploads = []
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key):
        uploads.extend(u for u in page.get("Uploads", []) if u["Key"] == key)
    return uploads


def _parts_of(s3: Any, bucket: str, key: str, upload_id: str) -> list[dict[str, Any]]:
    parts = []
    for page in s3.get_paginator("list_parts").paginate(Bucket=bucket, Key=key, UploadId=upload_id):
        parts.extend(page.get("Parts", []))
    return parts


def _run_copy_task(s3: Any, task: tuple[Any, ...]) -> None:
    if task[0] == "single":
        job: CopyJob = task[1]
        extra: dict[str, Any] = {}
        if job.content_type:
            extra["ContentType"] = job.content_type
        if job.source_etag:
            extra["CopySourceIfMatch"] = job.source_etag
        s3.copy_object(Bucket=job.dst_bucket, Key=job.dst_key,
                       CopySource={"Bucket": job.src_bucket, "Key": job.src_key},
                       Metadata=job.metadata, MetadataDirective="REPLACE", **extra)
        return
    upload: _Multipart = task[1]
    number: int = task[2]
    job = upload.job
    start, end = upload.ranges[number - 1]
    extra = {"CopySourceIfMatch": job.source_etag} if job.source_etag else {}
    answer = s3.upload_part_copy(Bucket=job.dst_bucket, Key=job.dst_key, UploadId=upload.upload_id,
                                 PartNumber=number, CopySource={"Bucket": job.src_bucket, "Key": job.src_key},
                                 CopySourceRange=f"bytes={start}-{end}", **extra)
    upload.etags[number] = answer["CopyPartResult"]["ETag"]  # distinct keys per thread: safe under the GIL


# ---------------------------------------------------------------------------------------------
# Quarantine


@dataclass(frozen=True)
class QuarantineResult:
    """Where a rejected drop was copied, and what was copied."""

    drop_uri: str
    quarantine_uri: str
    reason_uri: str
    copied: tuple[str, ...]
    skipped: tuple[str, ...]


def quarantine_drop(s3: Any, bucket: str, prefix: str, reason: Mapping[str, Any], *,
                    part_size: int = DEFAULT_PART_SIZE, workers: int = DEFAULT_WORKERS) -> QuarantineResult:
    """Copy every object under the drop ``prefix`` to ``quarantine/<prefix>`` and write ``reason.json``.

    ``reason`` (e.g. :meth:`llmops.integrity.DropVerification.to_dict` or
    :meth:`llmops.manifests.ManifestError.to_dict`) is written with the drop URI, the time and
    the list of copied objects. Nothing under ``prefix`` is changed or deleted. Object
    metadata and content type are kept; a copy already made by an earlier attempt of the same
    source object (same ETag) is skipped. Should the drop itself hold a root ``reason.json``,
    the record is written as ``_quarantine_reason.json`` beside it instead (see ``reason_uri``).
    """
    prefix = prefix.rstrip("/") + "/"
    target = quarantine_prefix(prefix)
    if prefix.startswith(QUARANTINE_PREFIX):
        raise StorageError(f"{s3_uri(bucket, prefix)} is already in quarantine; fix: pass the drop's own prefix")
    objects = list_prefix(s3, bucket, prefix)
    jobs: list[CopyJob] = []
    skipped: list[str] = []
    for obj in objects:
        relative = obj.key[len(prefix):]
        dst_key = target + relative
        existing = head(s3, bucket, dst_key)
        if (existing is not None and int(existing["ContentLength"]) == obj.size
                and existing.get("Metadata", {}).get(SOURCE_ETAG_META) == obj.etag.strip('"')):
            skipped.append(relative)
            continue
        source = head(s3, bucket, obj.key) or {}
        metadata = {**source.get("Metadata", {}), SOURCE_ETAG_META: obj.etag.strip('"')}
        jobs.append(CopyJob(src_bucket=bucket, src_key=obj.key, dst_bucket=bucket, dst_key=dst_key, size=obj.size,
                            metadata=metadata, content_type=source.get("ContentType"), source_etag=obj.etag or None))
    copy_objects(s3, jobs, part_size=part_size, workers=workers)
    relatives = [obj.key[len(prefix):] for obj in objects]
    reason_name = REASON_NAME if REASON_NAME not in relatives else "_quarantine_reason.json"
    record = {
        "drop": s3_uri(bucket, prefix),
        "quarantine": s3_uri(bucket, target),
        "quarantined_at": _now(),
        "objects": [{"path": obj.key[len(prefix):], "size": obj.size, "etag": obj.etag.strip('"')} for obj in objects],
        **dict(reason),
    }
    write_json(s3, bucket, target + reason_name, record)
    copied = tuple(job.dst_key[len(target):] for job in jobs)
    log.warning("quarantined %s -> %s (%d objects copied, %d already there)", s3_uri(bucket, prefix),
                s3_uri(bucket, target), len(copied), len(skipped))
    return QuarantineResult(drop_uri=s3_uri(bucket, prefix), quarantine_uri=s3_uri(bucket, target),
                            reason_uri=s3_uri(bucket, target + reason_name), copied=copied, skipped=tuple(skipped))


# ---------------------------------------------------------------------------------------------
# Staging


@dataclass(frozen=True)
class StagingResult:
    """What :func:`stage_drop` did."""

    uri: str
    weight_digest: str
    copied: tuple[str, ...]
    skipped: tuple[str, ...]
    parts: dict[str, int]
    already_staged: bool
    bytes_copied: int
    seconds: float

    @property
    def marker_uri(self) -> str:
        """The ``_staged.json`` marker of this staging."""
        return self.uri + STAGED_MARKER


def stage_drop(s3: Any, manifest: WeightDropManifest, drops_bucket: str, models_bucket: str, *,
               part_size: int = DEFAULT_PART_SIZE, workers: int = DEFAULT_WORKERS,
               source_etags: Mapping[str, str] | None = None) -> StagingResult:
    """Copy the drop described by ``manifest`` to ``models/<model>/sha256-<weight digest>/`` in ``models_bucket``.

    Server-side, resumable and idempotent (see the module docs). ``source_etags`` (path ->
    ETag, from :class:`llmops.integrity.DropVerification`) makes S3 refuse to copy an object
    that changed since it was verified. After the copies, every object is checked for size and
    SHA-256 metadata before ``_staged.json`` is written, last.
    """
    started = time.monotonic()
    digest = manifest.weight_digest
    target = staged_prefix(manifest.model, digest)
    uri = s3_uri(models_bucket, target)
    source = drop_prefix(manifest.model, manifest.revision)
    marker = _read_marker(s3, models_bucket, target + STAGED_MARKER)
    if marker is not None and marker.get("weight_digest") == digest:
        log.info("%s already staged (%s); nothing to copy", uri, STAGED_MARKER)
        return StagingResult(uri=uri, weight_digest=digest, copied=(), skipped=tuple(f.path for f in manifest.files),
                             parts={}, already_staged=True, bytes_copied=0, seconds=time.monotonic() - started)
    jobs: list[CopyJob] = []
    skipped: list[str] = []
    for entry in manifest.files:
        dst_key = target + entry.path
        if _staged_ok(head(s3, models_bucket, dst_key), entry):
            skipped.append(entry.path)
            continue
        etag = (source_etags or {}).get(entry.path)
        jobs.append(CopyJob(src_bucket=drops_bucket, src_key=source + entry.path, dst_bucket=models_bucket,
                            dst_key=dst_key, size=entry.size, metadata={SHA256_META: entry.sha256, DIGEST_META: digest},
                            source_etag=etag))
    try:
        parts = copy_objects(s3, jobs, part_size=part_size, workers=workers, resume=True)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        fix = ("the drop changed after it was verified: verify it again" if code == "PreconditionFailed"
               else "check that the drop is still in place and retry (finished copies are kept)")
        raise StorageError(f"staging {s3_uri(drops_bucket, source)} -> {uri} failed ({exc}); fix: {fix}") from exc
    bad = [entry.path for entry in manifest.files
           if not _staged_ok(head(s3, models_bucket, target + entry.path), entry)]
    if bad:
        raise StorageError(f"{uri}: after copying, {', '.join(bad)} lack the expected size or sha256 metadata; "
                           f"fix: retry the staging (objects are rewritten)")
    write_json(s3, models_bucket, target + STAGED_MARKER, {
        "weight_digest": digest, "model": manifest.model, "model_family": manifest.model_family,
        "source_drop": s3_uri(drops_bucket, source), "revision": manifest.revision,
        "runtime_image": manifest.runtime_image, "staged_at": _now(),
        "files": [f.to_dict() for f in manifest.files],
    })
    copied = tuple(job.dst_key[len(target):] for job in jobs)
    log.info("staged %s -> %s: %d copied, %d already there", s3_uri(drops_bucket, source), uri, len(copied),
             len(skipped))
    return StagingResult(uri=uri, weight_digest=digest, copied=copied, skipped=tuple(skipped),
                         parts={k[len(target):]: v for k, v in parts.items()}, already_staged=False,
                         bytes_copied=sum(job.size for job in jobs), seconds=time.monotonic() - started)


def read_staged_files(s3: Any, models_bucket: str, model: str, digest: str) -> list[ManifestFile] | None:
    """The file list recorded by a completed staging, or ``None`` when not staged (yet).

    Raises :class:`StorageError` if the marker's files do not hash to ``digest``.
    """
    key = staged_prefix(model, digest) + STAGED_MARKER
    marker = _read_marker(s3, models_bucket, key)
    if marker is None:
        return None
    files = [ManifestFile.of(item) for item in marker.get("files", [])]
    if weight_digest(files) != digest:
        raise StorageError(f"{s3_uri(models_bucket, key)}: its files do not hash to {digest}; "
                           f"fix: delete the marker and stage the drop again")
    return files


def _read_marker(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        marker = read_json(s3, bucket, key)
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("%s is not valid JSON; staging again", s3_uri(bucket, key))
        return None
    return marker if isinstance(marker, dict) else None


def _staged_ok(answer: Mapping[str, Any] | None, entry: ManifestFile) -> bool:
    return (answer is not None and int(answer["ContentLength"]) == entry.size
            and answer.get("Metadata", {}).get(SHA256_META) == entry.sha256)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

