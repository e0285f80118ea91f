"""Receive and stage in S3: drop locations, quarantine, receipts and content-addressed staging.

Every write is server-side and additive:

- :func:`quarantine_drop` copies every object of a rejected drop to
  ``quarantine/<model>/<revision>/...`` in the drops bucket and writes a ``reason.json``
  naming each bad file. Nothing is deleted from the drop.
- :func:`write_receipt` records a drop that receive verified (manifest ETag, weight digest,
  and the key, size and ETag of every verified object) as
  ``receipts/<model>/<revision>/receipt.json`` in the **models** bucket, which publishers
  cannot write. :func:`check_received` is stage's gate: it refuses (:class:`StagingRefused`)
  a drop without a receipt, or one that changed since (another manifest, an object added,
  removed or rewritten): only what receive hashed is ever staged.
- :func:`stage_drop` copies a received drop into the models bucket under a content-addressed
  prefix ``models/<model>/sha256-<weight digest>/<path>``, each object carrying its SHA-256 as
  metadata (``x-amz-meta-sha256``), with :func:`llmops.io.s3_copy.copy_objects`. The marker
  ``_staged.json`` (written last) records, besides the file list, the size and ETag of every
  staged object as copied. The marker never stands in for verification: every run compares
  each staged object with that record (one listing) and copies again, from the received drop,
  any object that changed or disappeared since. An object found without a record (an
  interrupted earlier run) is accepted only once its bytes hash to the manifest's SHA-256;
  an interrupted multipart copy resumes from its finished parts.

So the staged copy holds exactly the bytes receive verified, by construction and not because
the serving init container (:mod:`llmops.jobs.fetch_weights`) would refuse other bytes later.

Copies pass the ETags receive verified (``source_etags``) as ``CopySourceIfMatch``: S3 then
refuses the copy (``PreconditionFailed``, a :class:`StagingRefused`) if an object changed
after it was verified. moto accepts and ignores that precondition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from llmops.core.limits import MANIFEST_MAX_BYTES, InputTooLargeError
from llmops.core.manifests import (
    MANIFEST_NAME,
    QUARANTINE_PREFIX,
    STAGED_MARKER,
    ManifestError,
    ManifestFile,
    WeightDropManifest,
    load_drop_manifest,
    weight_digest,
)
from llmops.io.integrity import hash_object
from llmops.io.s3 import StorageError, head, is_not_found, list_prefix, read_bytes, read_json, s3_uri, write_json
from llmops.io.s3_copy import DEFAULT_PART_SIZE, DEFAULT_WORKERS, CopyJob, copy_objects

log = logging.getLogger(__name__)

REASON_NAME = "reason.json"
STAGED_ROOT = "models/"
SHA256_META = "sha256"
"""Metadata key (``x-amz-meta-sha256``) of each staged object's SHA-256."""
DIGEST_META = "weight-digest"
SOURCE_ETAG_META = "quarantine-source-etag"
DEFAULT_MODELS_BUCKET = "llmops-models"
"""The models bucket of receive's receipts and stage's copies when ``$LLMOPS_MODELS_BUCKET`` is unset."""
RECEIPTS_ROOT = "receipts/"
RECEIPT_NAME = "receipt.json"
RUN_RECEIVE = "run receive on the drop (it verifies every file and writes the receipt), then stage it"


class StagingRefused(StorageError):
    """The drop or its staged copy cannot be staged as it is: a verdict, not worth a retry.

    The message names the drop, what differs and the fix.
    """


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

    Raises ``FileNotFoundError`` or :class:`llmops.core.manifests.ManifestError` (anything wrong
    with it, its size over ``MANIFEST_MAX_BYTES`` included: at most that many bytes are read).
    """
    return read_drop_manifest_versioned(s3, bucket, prefix)[0]


def read_drop_manifest_versioned(s3: Any, bucket: str, prefix: str) -> tuple[WeightDropManifest, str]:
    """:func:`read_drop_manifest` and the ETag of the ``manifest.json`` it parsed (one GET: no race)."""
    model, revision = split_drop_prefix(prefix)
    key = drop_prefix(model, revision) + MANIFEST_NAME
    uri = s3_uri(bucket, key)
    try:
        body, etag = read_bytes(s3, bucket, key, max_bytes=MANIFEST_MAX_BYTES, what="the manifest")
    except InputTooLargeError as exc:
        raise ManifestError(uri, [(exc.field, exc.problem, exc.fix)]) from None
    manifest = load_drop_manifest(body, uri, expect_model=model, expect_revision=revision)
    return manifest, _etag(etag)


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
# Receipts: what receive verified, and stage's check that the drop is still exactly that


@dataclass(frozen=True)
class ObjectState:
    """An S3 object as listed: its size and ETag (without quotes)."""

    size: int
    etag: str

    @classmethod
    def of(cls, size: int, etag: str) -> ObjectState:
        """The state of an object of ``size`` bytes whose ETag is ``etag`` (quoted or not)."""
        return cls(size=int(size), etag=_etag(etag))


@dataclass(frozen=True)
class DropReceipt:
    """Receive's record of a drop it verified: the manifest it parsed and every object it hashed."""

    drop_uri: str
    model: str
    revision: str
    weight_digest: str
    manifest_etag: str
    objects: Mapping[str, ObjectState]
    """``path -> state`` of every file of the manifest, as hashed by receive."""
    received_at: str = ""
    mlflow_run_id: str | None = None
    airflow_run_id: str | None = None
    airflow_try: str | None = None

    @property
    def etags(self) -> dict[str, str]:
        """``path -> ETag`` of the verified objects (the ``CopySourceIfMatch`` of each copy)."""
        return {path: state.etag for path, state in self.objects.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the body of ``receipt.json``)."""
        _, prefix = self.drop_uri.removeprefix("s3://").split("/", 1)
        return {
            "kind": "llmops.receive-receipt", "drop_uri": self.drop_uri, "model": self.model,
            "revision": self.revision, "weight_digest": self.weight_digest,
            "manifest": {"key": prefix + MANIFEST_NAME, "etag": self.manifest_etag},
            "objects": [{"path": path, "key": prefix + path, "size": state.size, "etag": state.etag}
                        for path, state in sorted(self.objects.items())],
            "received_at": self.received_at, "mlflow_run_id": self.mlflow_run_id,
            "airflow_run_id": self.airflow_run_id, "airflow_try": self.airflow_try,
        }

    @classmethod
    def from_dict(cls, data: Any, uri: str) -> DropReceipt:
        """Parse ``receipt.json`` read from ``uri``; ``ValueError`` names the field and the fix."""
        fix = f"fix: {RUN_RECEIVE} (it rewrites the receipt)"
        if not isinstance(data, dict):
            raise ValueError(f"{uri}: not a JSON object; {fix}")
        try:
            objects = {str(item["path"]): ObjectState.of(item["size"], str(item["etag"]))
                       for item in data["objects"]}
            return cls(drop_uri=str(data["drop_uri"]), model=str(data["model"]), revision=str(data["revision"]),
                       weight_digest=str(data["weight_digest"]), manifest_etag=_etag(str(data["manifest"]["etag"])),
                       objects=objects, received_at=str(data.get("received_at") or ""),
                       mlflow_run_id=data.get("mlflow_run_id"), airflow_run_id=data.get("airflow_run_id"),
                       airflow_try=data.get("airflow_try"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{uri}: field {exc} is missing or malformed; {fix}") from exc


def receipt_key(model: str, revision: str) -> str:
    """Where receive records a verified drop in the models bucket: ``receipts/<model>/<revision>/receipt.json``."""
    return f"{RECEIPTS_ROOT}{model}/{revision}/{RECEIPT_NAME}"


def receipt_differences(receipt: DropReceipt, *, drop_uri: str, manifest: WeightDropManifest, manifest_etag: str,
                        drop_now: Mapping[str, ObjectState]) -> list[str]:
    """How the drop as it is now (``manifest`` read with ``manifest_etag``, the other objects
    ``drop_now``: ``path -> state``) differs from what receive verified; ``[]`` when it is the same.

    Pure. Every line names the object and what differs.
    """
    problems: list[str] = []
    if receipt.drop_uri != drop_uri:
        problems.append(f"the receipt is for {receipt.drop_uri}, not {drop_uri}")
    if _etag(manifest_etag) != receipt.manifest_etag:
        problems.append(f"{MANIFEST_NAME}: rewritten since receive (ETag {_etag(manifest_etag)}, "
                        f"receive verified {receipt.manifest_etag})")
    if manifest.weight_digest != receipt.weight_digest:
        problems.append(f"{MANIFEST_NAME}: weight digest {manifest.weight_digest}, receive verified "
                        f"{receipt.weight_digest}")
    listed = {entry.path for entry in manifest.files}
    for path in sorted(listed - set(receipt.objects)):
        problems.append(f"{path}: listed by the manifest but not verified by receive")
    for path, verified in sorted(receipt.objects.items()):
        now = drop_now.get(path)
        if path not in listed:
            problems.append(f"{path}: verified by receive but not listed by the manifest")
        elif now is None:
            problems.append(f"{path}: removed since receive")
        elif now.size != verified.size:
            problems.append(f"{path}: {now.size} bytes now, receive verified {verified.size}")
        elif now.etag != verified.etag:
            problems.append(f"{path}: rewritten since receive (ETag {now.etag}, receive verified {verified.etag})")
    for path in sorted(set(drop_now) - set(receipt.objects) - listed):
        problems.append(f"{path}: added since receive (not in the manifest)")
    return problems


def source_etag_differences(receipt: DropReceipt, source_etags: Mapping[str, str]) -> list[str]:
    """How ``source_etags`` (``path -> ETag`` from this run's receive result) differ from the receipt. Pure."""
    verified = receipt.etags
    problems = [f"{path}: this run's receive read ETag {_etag(etag)}, the receipt holds "
                f"{verified.get(path, 'no entry')}"
                for path, etag in sorted(source_etags.items()) if verified.get(path) != _etag(etag)]
    problems += [f"{path}: in the receipt, not in this run's receive result"
                 for path in sorted(set(verified) - set(source_etags))]
    return problems


def write_receipt(s3: Any, models_bucket: str, receipt: DropReceipt) -> str:
    """Write ``receipt`` (one PUT; a retry rewrites the same facts); return its URI."""
    key = receipt_key(receipt.model, receipt.revision)
    write_json(s3, models_bucket, key, receipt.to_dict())
    return s3_uri(models_bucket, key)


def read_receipt(s3: Any, models_bucket: str, model: str, revision: str) -> DropReceipt | None:
    """The receipt of drop ``<model>/<revision>``, or ``None`` when receive never passed it."""
    key = receipt_key(model, revision)
    try:
        data = read_json(s3, models_bucket, key)
    except FileNotFoundError:
        return None
    return DropReceipt.from_dict(data, s3_uri(models_bucket, key))


def drop_objects(s3: Any, bucket: str, prefix: str) -> dict[str, ObjectState]:
    """``path -> state`` of every object under the drop ``prefix`` but its ``manifest.json``."""
    return {obj.key[len(prefix):]: ObjectState.of(obj.size, obj.etag) for obj in list_prefix(s3, bucket, prefix)
            if obj.key[len(prefix):] != MANIFEST_NAME}


def check_received(s3: Any, drops_bucket: str, prefix: str, models_bucket: str,
                   source_etags: Mapping[str, str] | None = None) -> tuple[WeightDropManifest, DropReceipt]:
    """The manifest and receipt of the drop at ``prefix``, once the drop is exactly what receive verified.

    Raises :class:`StagingRefused` naming the drop, what differs and the fix (run receive)
    when there is no receipt, or the drop (or ``source_etags``, this run's receive result)
    differs from it; ``FileNotFoundError`` / ``ValueError`` as :func:`read_drop_manifest`.
    """
    prefix = prefix.rstrip("/") + "/"
    model, revision = split_drop_prefix(prefix)
    drop_uri = s3_uri(drops_bucket, prefix)
    where = s3_uri(models_bucket, receipt_key(model, revision))
    manifest, manifest_etag = read_drop_manifest_versioned(s3, drops_bucket, prefix)
    try:
        receipt = read_receipt(s3, models_bucket, model, revision)
    except ValueError as exc:
        raise StagingRefused(f"cannot stage {drop_uri}: {exc}") from exc
    if receipt is None:
        raise StagingRefused(f"cannot stage {drop_uri}: receive never passed it (no receipt at {where}); "
                             f"fix: {RUN_RECEIVE}")
    problems = receipt_differences(receipt, drop_uri=drop_uri, manifest=manifest, manifest_etag=manifest_etag,
                                   drop_now=drop_objects(s3, drops_bucket, prefix))
    if source_etags is not None:
        problems += source_etag_differences(receipt, source_etags)
    if problems:
        raise StagingRefused(f"cannot stage {drop_uri}: it is not the drop receive verified ({where}, received "
                             f"{receipt.received_at or 'at an unknown time'}):\n"
                             + "\n".join(f"  - {p}" for p in problems)
                             + f"\nfix: {RUN_RECEIVE} (a rejected drop must be corrected and published again "
                               f"first)")
    return manifest, receipt


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
    repaired: dict[str, str] = field(default_factory=dict)
    """``path -> what changed`` of staged objects copied again because they differed from the marker's record."""
    hashed: tuple[str, ...] = ()
    """Objects found without a record (an interrupted run) and accepted because their bytes hash right."""


@dataclass(frozen=True)
class StagingPlan:
    """What to do with each file of a drop at its staged key (see :func:`plan_staging`)."""

    intact: tuple[str, ...]
    """Recorded by the marker at copy time and unchanged since (same size and ETag)."""
    to_hash: tuple[str, ...]
    """Present with the right size but not recorded: accepted only if its bytes hash right."""
    to_copy: tuple[str, ...]
    """Absent, of the wrong size, or changed since staging: copied from the received drop."""
    changed: dict[str, str]
    """``path -> what changed`` for the recorded objects among ``to_copy``."""


def plan_staging(files: Sequence[ManifestFile], recorded: Mapping[str, ObjectState],
                 present: Mapping[str, ObjectState]) -> StagingPlan:
    """Sort the drop's ``files`` by what their staged objects need. Pure.

    ``recorded`` is the marker's ``path -> state`` at copy time (empty without a marker),
    ``present`` the staged objects as listed now. A marker never replaces a check: a recorded
    object is intact only while its size and ETag are the recorded ones.
    """
    intact: list[str] = []
    to_hash: list[str] = []
    to_copy: list[str] = []
    changed: dict[str, str] = {}
    for entry in files:
        now, then = present.get(entry.path), recorded.get(entry.path)
        if then is not None and now == then and now.size == entry.size:
            intact.append(entry.path)
        elif then is not None:
            changed[entry.path] = ("deleted since staging" if now is None else
                                   f"{now.size} bytes, ETag {now.etag} since staging; staged as "
                                   f"{then.size} bytes, ETag {then.etag}")
            to_copy.append(entry.path)
        elif now is not None and now.size == entry.size:
            to_hash.append(entry.path)
        else:
            to_copy.append(entry.path)
    return StagingPlan(intact=tuple(intact), to_hash=tuple(to_hash), to_copy=tuple(to_copy), changed=changed)


def stage_drop(s3: Any, manifest: WeightDropManifest, drops_bucket: str, models_bucket: str, *,
               part_size: int = DEFAULT_PART_SIZE, workers: int = DEFAULT_WORKERS,
               source_etags: Mapping[str, str] | None = None) -> StagingResult:
    """Copy the drop described by ``manifest`` to ``models/<model>/sha256-<weight digest>/`` in ``models_bucket``.

    Server-side, resumable and idempotent (see the module docs). ``source_etags`` (path ->
    ETag, from the receipt) makes S3 refuse to copy an object that changed since it was
    verified. Every staged object is checked against the marker's record (size and ETag at
    copy time) even when the marker exists; one that changed is copied again, and one found
    without a record is hashed. The marker is (re)written, last, only when something changed.

    Raises :class:`StagingRefused` when the drop changed since it was verified or no longer
    holds an object to copy, :class:`StorageError` on any other failed copy (a retry resumes).
    """
    started = time.monotonic()
    digest = manifest.weight_digest
    target = staged_prefix(manifest.model, digest)
    uri = s3_uri(models_bucket, target)
    source = drop_prefix(manifest.model, manifest.revision)
    marker = _read_marker(s3, models_bucket, target + STAGED_MARKER)
    if marker is not None and marker.get("weight_digest") != digest:
        marker = None
    present = {obj.key[len(target):]: ObjectState.of(obj.size, obj.etag)
               for obj in list_prefix(s3, models_bucket, target)}
    plan = plan_staging(manifest.files, _recorded_objects(marker), present)
    if plan.changed:
        log.warning("%s: %d staged object(s) changed since staging, copying them again from %s:\n%s", uri,
                    len(plan.changed), s3_uri(drops_bucket, source),
                    "\n".join(f"  - {path}: {what}" for path, what in plan.changed.items()))
    states = {path: present[path] for path in plan.intact}
    entries = {entry.path: entry for entry in manifest.files}
    hashed, unverified = _hash_staged(s3, models_bucket, target, [entries[p] for p in plan.to_hash], workers)
    states.update(hashed)
    to_copy = [*plan.to_copy, *unverified]
    if marker is not None and not to_copy and not hashed:
        log.info("%s already staged: every object is the one recorded by %s", uri, STAGED_MARKER)
        return StagingResult(uri=uri, weight_digest=digest, copied=(), skipped=tuple(f.path for f in manifest.files),
                             parts={}, already_staged=True, bytes_copied=0, seconds=time.monotonic() - started)
    jobs = [CopyJob(src_bucket=drops_bucket, src_key=source + path, dst_bucket=models_bucket, dst_key=target + path,
                    size=entries[path].size, metadata={SHA256_META: entries[path].sha256, DIGEST_META: digest},
                    source_etag=(source_etags or {}).get(path))
            for path in sorted(to_copy)]
    try:
        parts = copy_objects(s3, jobs, part_size=part_size, workers=workers, resume=True)
    except ClientError as exc:
        raise _copy_error(exc, s3_uri(drops_bucket, source), uri, plan.changed) from exc
    bad: list[str] = []
    for job in jobs:
        path = job.dst_key[len(target):]
        answer = head(s3, models_bucket, job.dst_key)
        if not _staged_ok(answer, entries[path]):
            bad.append(path)
        else:
            states[path] = ObjectState.of(int(answer["ContentLength"]), str(answer.get("ETag", "")))
    if bad:
        raise StorageError(f"{uri}: after copying, {', '.join(bad)} lack the expected size or sha256 metadata; "
                           f"fix: retry the staging (objects are rewritten)")
    now = _now()
    write_json(s3, models_bucket, target + STAGED_MARKER, {
        "weight_digest": digest, "model": manifest.model, "model_family": manifest.model_family,
        "source_drop": s3_uri(drops_bucket, source), "revision": manifest.revision,
        "runtime_image": manifest.runtime_image,
        "staged_at": (marker or {}).get("staged_at") or now, "checked_at": now,
        "files": [f.to_dict() for f in manifest.files],
        "objects": {path: {"size": state.size, "etag": state.etag} for path, state in sorted(states.items())},
        **({"repaired": {"at": now, "objects": plan.changed}} if plan.changed else {}),
    })
    copied = tuple(job.dst_key[len(target):] for job in jobs)
    skipped = tuple(path for path in entries if path not in to_copy)
    log.info("staged %s -> %s: %d copied, %d already there (%d of them hashed)", s3_uri(drops_bucket, source), uri,
             len(copied), len(skipped), len(hashed))
    return StagingResult(uri=uri, weight_digest=digest, copied=copied, skipped=skipped,
                         parts={k[len(target):]: v for k, v in parts.items()}, already_staged=marker is not None,
                         bytes_copied=sum(job.size for job in jobs), seconds=time.monotonic() - started,
                         repaired=dict(plan.changed), hashed=tuple(sorted(hashed)))


def _recorded_objects(marker: Mapping[str, Any] | None) -> dict[str, ObjectState]:
    """The marker's ``path -> state`` at copy time; empty for no marker or one written before the record."""
    objects = (marker or {}).get("objects")
    if not isinstance(objects, dict):
        return {}
    recorded: dict[str, ObjectState] = {}
    for path, state in objects.items():
        try:
            recorded[str(path)] = ObjectState.of(state["size"], str(state["etag"]))
        except (KeyError, TypeError, ValueError):
            continue  # an unreadable record: the object is hashed instead
    return recorded


def _hash_staged(s3: Any, bucket: str, target: str, entries: Sequence[ManifestFile],
                 workers: int) -> tuple[dict[str, ObjectState], list[str]]:
    """Hash staged objects found without a record: ``(path -> state of those that match, paths that do not)``.

    The sha256 metadata is checked first (a mismatch needs no read); the state recorded is the
    ETag of the very bytes hashed.
    """
    def check(entry: ManifestFile) -> tuple[str, ObjectState | None]:
        if not _staged_ok(head(s3, bucket, target + entry.path), entry):
            return entry.path, None
        hashed = hash_object(s3, bucket, target + entry.path)
        if hashed is None or hashed[0] != entry.size or hashed[1] != entry.sha256:
            log.warning("%s: its bytes do not hash to %s; copying it again", s3_uri(bucket, target + entry.path),
                        entry.sha256)
            return entry.path, None
        return entry.path, ObjectState.of(hashed[0], hashed[2])

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stage-sha256") as pool:
        results = list(pool.map(check, entries))
    return ({path: state for path, state in results if state is not None},
            [path for path, state in results if state is None])


def _copy_error(exc: ClientError, drop_uri: str, uri: str, changed: Mapping[str, str]) -> StorageError:
    code = exc.response.get("Error", {}).get("Code")
    if code == "PreconditionFailed":
        return StagingRefused(f"staging {drop_uri} -> {uri}: the drop changed after receive verified it ({exc}); "
                              f"fix: {RUN_RECEIVE}")
    if is_not_found(exc):
        repairs = "".join(f"\n  - {path}: {what}" for path, what in changed.items())
        what = (f"staged objects changed since staging and must be copied again:{repairs}\n"
                if changed else "")
        return StagingRefused(f"staging {drop_uri} -> {uri}: {what}the drop no longer holds an object to copy "
                              f"({exc}); fix: publish the drop again, {RUN_RECEIVE}")
    return StorageError(f"staging {drop_uri} -> {uri} failed ({exc}); fix: check that the drop is still in "
                        f"place and retry (finished copies are kept)")


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


def _etag(value: str) -> str:
    return value.strip('"')


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

