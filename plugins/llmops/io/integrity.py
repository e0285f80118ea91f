"""Streaming SHA-256 verification of weight drops: from S3 (receive) and on disk (serving init).

Each file is read once, in chunks, counting bytes and hashing in the same pass; nothing is
written to disk. Files are verified in parallel threads (``hashlib`` and socket reads release
the GIL, so threads use several cores). The outcome of each file is one of:

- ``ok``: size and SHA-256 match the manifest;
- ``missing``: no such object/file;
- ``size_mismatch``: a different number of bytes (a truncated or overlong upload); not hashed
  when the listing already shows the wrong size;
- ``sha256_mismatch``: the right size, different content (a corrupted or wrong file).

Objects under the drop that the manifest does not list are reported as ``extra``. A transient
S3 error is raised, not reported as a bad file: a retry must not quarantine a good drop.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmops.core.manifests import MANIFEST_NAME, STAGED_MARKER, ManifestFile, weight_digest

log = logging.getLogger(__name__)

MiB = 1024 * 1024
S3_CHUNK_SIZE = 8 * MiB
"""Bytes read from an S3 body per hash update."""
FILE_CHUNK_SIZE = 1 * MiB
"""Bytes read from a local file per hash update (measured fastest by ``bench/integrity.py``)."""
DEFAULT_WORKERS = 4

Outcome = Literal["ok", "missing", "size_mismatch", "sha256_mismatch"]

_FIXES: dict[str, str] = {
    "missing": "upload the file to the drop, or remove it from the manifest if it is not part of the model",
    "size_mismatch": "upload the file again completely (or correct its size and sha256 in the manifest)",
    "sha256_mismatch": "upload the file again (or correct its sha256 in the manifest if the file is right)",
    "extra": "list it in the manifest with its size and sha256, or remove it from the drop",
}


class IntegrityError(RuntimeError):
    """Files do not match their manifest; the message names each bad file and the fix."""

    def __init__(self, message: str, verification: DropVerification | None = None) -> None:
        super().__init__(message)
        self.verification = verification


@dataclass(frozen=True)
class FileCheck:
    """The verification outcome of one manifest file."""

    path: str
    outcome: Outcome
    expected_size: int
    expected_sha256: str
    actual_size: int | None = None
    actual_sha256: str | None = None
    etag: str | None = None

    @property
    def ok(self) -> bool:
        """True when size and SHA-256 match."""
        return self.outcome == "ok"

    def describe(self) -> str:
        """One line naming the file, what is wrong and the fix."""
        if self.outcome == "ok":
            return f"{self.path}: ok"
        if self.outcome == "missing":
            what = "missing"
        elif self.outcome == "size_mismatch":
            kind = "truncated" if (self.actual_size or 0) < self.expected_size else "longer than listed"
            what = f"{kind}: {self.actual_size} bytes, the manifest says {self.expected_size}"
        else:
            what = f"content differs: sha256 {self.actual_sha256}, the manifest says {self.expected_sha256}"
        return f"{self.path}: {what}; fix: {_FIXES[self.outcome]}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"path": self.path, "outcome": self.outcome, "expected_size": self.expected_size,
                "actual_size": self.actual_size, "expected_sha256": self.expected_sha256,
                "actual_sha256": self.actual_sha256}


@dataclass(frozen=True)
class ExtraObject:
    """An object/file under the drop that the manifest does not list."""

    path: str
    size: int

    def describe(self) -> str:
        """One line naming the object and the fix."""
        return f"{self.path}: not in the manifest ({self.size} bytes); fix: {_FIXES['extra']}"


@dataclass(frozen=True)
class DropVerification:
    """The outcome of verifying every file of a drop (in S3 or in a local folder)."""

    location: str
    weight_digest: str
    files: tuple[FileCheck, ...]
    extra: tuple[ExtraObject, ...]
    bytes_read: int
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every file matches and nothing unlisted is present."""
        return not self.bad and not self.extra

    @property
    def bad(self) -> tuple[FileCheck, ...]:
        """The files that are missing, of the wrong size or content."""
        return tuple(f for f in self.files if not f.ok)

    @property
    def etags(self) -> dict[str, str]:
        """``path -> ETag`` of the verified S3 objects (for :func:`llmops.storage.stage_drop`)."""
        return {f.path: f.etag for f in self.files if f.ok and f.etag}

    @property
    def throughput_mb_s(self) -> float:
        """MB (10^6 bytes) hashed per second of wall time."""
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def problems(self) -> list[str]:
        """One line per bad file and per extra object, each with its fix."""
        return [f.describe() for f in self.bad] + [e.describe() for e in self.extra]

    def message(self) -> str:
        """A summary naming every bad file (empty problems: a one-line success)."""
        problems = self.problems()
        if not problems:
            return f"{self.location}: {len(self.files)} files verified ({self.bytes_read} bytes)"
        return (f"{self.location}: {len(problems)} problem(s) in a drop of {len(self.files)} files:\n"
                + "\n".join(f"  - {line}" for line in problems))

    def raise_for_problems(self) -> None:
        """Raise :class:`IntegrityError` with :meth:`message` unless :attr:`ok`."""
        if not self.ok:
            raise IntegrityError(self.message(), self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the body of a quarantine ``reason.json``)."""
        return {
            "location": self.location, "weight_digest": self.weight_digest, "ok": self.ok,
            "problems": self.problems(),
            "bad_files": [f.to_dict() for f in self.bad],
            "extra": [{"path": e.path, "size": e.size} for e in self.extra],
            "files_verified": len(self.files), "bytes_read": self.bytes_read,
        }


# ---------------------------------------------------------------------------------------------
# Local files


def hash_file(path: str | os.PathLike[str], chunk_size: int = FILE_CHUNK_SIZE) -> tuple[int, str]:
    """``(size in bytes, SHA-256 hex)`` of a local file, read once in ``chunk_size`` chunks."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            size += count
    return size, digest.hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk_size: int = FILE_CHUNK_SIZE) -> str:
    """SHA-256 (hex) of a local file, streamed (what ``sha256sum`` prints)."""
    return hash_file(path, chunk_size)[1]


def verify_local_dir(directory: str | os.PathLike[str], files: Iterable[ManifestFile | Mapping[str, Any]], *,
                     workers: int = DEFAULT_WORKERS, expected_weight_digest: str | None = None,
                     ignore: Sequence[str] = (MANIFEST_NAME, STAGED_MARKER)) -> DropVerification:
    """Verify the files of a model folder against their manifest entries (the serving pod's init step).

    ``expected_weight_digest`` (the pinned digest) must equal :func:`~llmops.core.manifests.weight_digest`
    of ``files``, else :class:`IntegrityError` is raised before anything is read. Files present
    but not listed are reported as ``extra`` unless they match a glob in ``ignore``. Call
    :meth:`DropVerification.raise_for_problems` to refuse to serve on any mismatch.
    """
    root = Path(directory)
    entries = [ManifestFile.of(f) for f in files]
    digest = weight_digest(entries)
    if expected_weight_digest is not None and digest != expected_weight_digest:
        raise IntegrityError(f"{root}: the file list hashes to weight digest {digest}, the deployment pins "
                             f"{expected_weight_digest}; fix: serve the files of the pinned drop "
                             f"(its _staged.json / manifest), not another list")
    if not root.is_dir():
        raise IntegrityError(f"{root}: not a folder; fix: mount or download the staged model there first")
    started = time.monotonic()

    def check(entry: ManifestFile) -> FileCheck:
        path = root / entry.path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return _outcome(entry, None, None)
        if size != entry.size:
            return _outcome(entry, size, None)
        return _outcome(entry, *hash_file(path))

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sha256") as pool:
        checks = tuple(pool.map(check, entries))
    listed = {e.path for e in entries}
    extra = tuple(
        ExtraObject(path=rel, size=p.stat().st_size)
        for p in sorted(root.rglob("*")) if p.is_file()
        for rel in [p.relative_to(root).as_posix()]
        if rel not in listed and not _ignored(rel, ignore)
    )
    return DropVerification(location=str(root), weight_digest=digest, files=checks, extra=extra,
                            bytes_read=sum(c.actual_size or 0 for c in checks if c.actual_sha256),
                            seconds=time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# S3


def hash_object(s3: Any, bucket: str, key: str, chunk_size: int = S3_CHUNK_SIZE) -> tuple[int, str, str] | None:
    """``(size, SHA-256 hex, ETag)`` of an S3 object streamed in chunks; ``None`` if it does not exist."""
    from botocore.exceptions import ClientError

    try:
        answer = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    digest = hashlib.sha256()
    size = 0
    body = answer["Body"]
    try:
        for chunk in body.iter_chunks(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    return size, digest.hexdigest(), str(answer.get("ETag", ""))


def verify_drop(s3: Any, bucket: str, prefix: str, files: Iterable[ManifestFile | Mapping[str, Any]], *,
                workers: int = DEFAULT_WORKERS, chunk_size: int = S3_CHUNK_SIZE,
                ignore: Sequence[str] = (MANIFEST_NAME,)) -> DropVerification:
    """Verify every manifest file of the drop at ``s3://bucket/prefix`` by streaming it once.

    The prefix is listed first: files absent from the listing are ``missing`` and files whose
    listed size differs are ``size_mismatch`` without being read; the others are streamed
    (``workers`` at a time) and judged on the bytes actually received. Objects under the
    prefix that are not listed (and match no glob in ``ignore``) are reported as ``extra``.
    """
    from llmops.io.s3 import list_prefix, s3_uri

    prefix = prefix.rstrip("/") + "/"
    entries = [ManifestFile.of(f) for f in files]
    digest = weight_digest(entries)
    started = time.monotonic()
    listed = {obj.key[len(prefix):]: obj for obj in list_prefix(s3, bucket, prefix)}

    def check(entry: ManifestFile) -> FileCheck:
        obj = listed.get(entry.path)
        if obj is None:
            return _outcome(entry, None, None)
        if obj.size != entry.size:
            return _outcome(entry, obj.size, None, obj.etag)
        hashed = hash_object(s3, bucket, prefix + entry.path, chunk_size)
        if hashed is None:  # deleted between listing and reading
            return _outcome(entry, None, None)
        size, sha, etag = hashed
        log.info("verified %s: %d bytes", entry.path, size)
        return _outcome(entry, size, sha, etag)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sha256") as pool:
        checks = tuple(pool.map(check, entries))
    names = {e.path for e in entries}
    extra = tuple(ExtraObject(path=rel, size=obj.size) for rel, obj in sorted(listed.items())
                  if rel not in names and not _ignored(rel, ignore) and not (rel.endswith("/") and obj.size == 0))
    return DropVerification(location=s3_uri(bucket, prefix), weight_digest=digest, files=checks, extra=extra,
                            bytes_read=sum(c.actual_size or 0 for c in checks if c.actual_sha256),
                            seconds=time.monotonic() - started)


def _outcome(entry: ManifestFile, size: int | None, sha: str | None, etag: str | None = None) -> FileCheck:
    if size is None:
        outcome: Outcome = "missing"
    elif size != entry.size:
        outcome = "size_mismatch"
    elif sha != entry.sha256:
        outcome = "sha256_mismatch"
    else:
        outcome = "ok"
    return FileCheck(path=entry.path, outcome=outcome, expected_size=entry.size, expected_sha256=entry.sha256,
                     actual_size=size, actual_sha256=sha, etag=etag)


def _ignored(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)
