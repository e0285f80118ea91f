"""Receive and stage in S3: drop locations, quarantine and content-addressed staging.

Every write is server-side and additive:

- :func:`quarantine_drop` copies every object of a rejected drop to
  ``quarantine/<model>/<revision>/...`` in the drops bucket and writes a ``reason.json``
  naming each bad file. Nothing is deleted from the drop.
- :func:`stage_drop` copies a verified drop into the models bucket under a content-addressed
  prefix ``models/<model>/sha256-<weight digest>/<path>``, each object carrying its SHA-256 as
  metadata (``x-amz-meta-sha256``), with :func:`llmops.io.s3_copy.copy_objects`. A re-run
  skips objects already present with the expected size and SHA-256, resumes an interrupted
  multipart copy from its finished parts, and is a no-op once ``_staged.json`` (written last)
  records the completed staging.

Copies of a verified drop may pass the ETags that verification read
(``source_etags``): S3 then refuses the copy (``PreconditionFailed``) if an object changed
after it was verified. moto accepts and ignores that precondition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from llmops.core.manifests import (
    MANIFEST_NAME,
    QUARANTINE_PREFIX,
    STAGED_MARKER,
    ManifestFile,
    WeightDropManifest,
    parse_drop_manifest,
    weight_digest,
)
from llmops.io.s3 import StorageError, head, list_prefix, read_json, s3_uri, write_json
from llmops.io.s3_copy import DEFAULT_PART_SIZE, DEFAULT_WORKERS, CopyJob, copy_objects

log = logging.getLogger(__name__)

REASON_NAME = "reason.json"
STAGED_ROOT = "models/"
SHA256_META = "sha256"
"""Metadata key (``x-amz-meta-sha256``) of each staged object's SHA-256."""
DIGEST_META = "weight-digest"
SOURCE_ETAG_META = "quarantine-source-etag"


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


def read_drop_manifest(s3: Any, bucket: str, prefix: str) -> WeightDropManifest:
    """Read and validate ``<prefix>manifest.json``; its model and revision must match the prefix.

    Raises ``FileNotFoundError`` / ``ValueError`` (see :func:`read_json`) or
    :class:`llmops.manifests.ManifestError`.
    """
    model, revision = split_drop_prefix(prefix)
    key = drop_prefix(model, revision) + MANIFEST_NAME
    data = read_json(s3, bucket, key)
    return parse_drop_manifest(data, s3_uri(bucket, key), expect_model=model, expect_revision=revision)


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

