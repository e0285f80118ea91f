"""Serving init step: fetch the staged weights of a deployment and verify them before vLLM may start.

    python -m llmops.jobs.fetch_weights \\
        --weights-uri s3://llmops-models/models/tiny-chat/sha256-<digest>/ \\
        --dest /models/tiny-chat/sha256-<digest> --weight-digest <digest>

- ``dest`` holds a ``.verified`` marker for this digest (a warm model cache): the files are
  checked against the marker's list by size (``--full-verify``: by SHA-256 too); exit 0.
- otherwise every file listed by the staging marker (``_staged.json``) is downloaded to a
  temporary folder beside ``dest``, verified (sizes, SHA-256, and that the list hashes to the
  pinned weight digest), renamed into place in one step, and the marker written.

Any mismatch exits 3 naming each bad file: the server refuses to serve weights that are not
the pinned ones. Exit 2 when the arguments are wrong or the weights were never staged.
Result (``return.json``, harmless in an init container): ``{status: "ok", dest, weight_digest,
cache_hit, files, bytes_downloaded, seconds}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops.core.manifests import MANIFEST_NAME, STAGED_MARKER, ManifestFile, weight_digest
from llmops.core.podjob import VERDICT_EXIT_CODE
from llmops.io.integrity import DEFAULT_WORKERS, IntegrityError, verify_local_dir
from llmops.io.s3 import StorageError, client_from_env, parse_s3_uri, s3_uri
from llmops.jobs.common import setup_logging, write_result
from llmops.refresh.staging import STAGED_ROOT, read_staged_files

log = setup_logging("llmops.jobs.fetch_weights")

EXIT_INVALID = VERDICT_EXIT_CODE
EXIT_MISMATCH = 3
VERIFIED_MARKER = ".verified"
REFUSE = "the server refuses to serve these weights"

_STAGED = re.compile(rf"^{re.escape(STAGED_ROOT)}(?P<model>[^/]+)/sha256-(?P<digest>[0-9a-f]{{64}})/$")


class FetchError(RuntimeError):
    """The weights cannot be served; ``code`` is the exit status, the message names each file and the fix."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-uri", required=True,
                        help="s3://<models bucket>/models/<model>/sha256-<digest>/ (the deployment's weights_uri)")
    parser.add_argument("--dest", type=Path, required=True, help="local folder vLLM serves from")
    parser.add_argument("--weight-digest", required=True, help="the pinned weight digest (64 hex)")
    parser.add_argument("--full-verify", action="store_true", help="re-hash a cached folder instead of sizes only")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="files downloaded/hashed in parallel")
    return parser.parse_args(argv)


def parse_weights_uri(uri: str, digest: str) -> tuple[str, str, str]:
    """``(bucket, prefix, model)`` of a staged weights URI whose digest must equal ``digest``."""
    try:
        bucket, prefix = parse_s3_uri(uri)
    except ValueError as exc:
        raise FetchError(f"--weights-uri: {exc}", EXIT_INVALID) from exc
    prefix = prefix.rstrip("/") + "/"
    match = _STAGED.match(prefix)
    if not match:
        raise FetchError(f"--weights-uri {uri!r} is not a staged prefix; fix: pass the deployment's weights_uri, "
                         f"s3://<bucket>/{STAGED_ROOT}<model>/sha256-<digest>/", EXIT_INVALID)
    if match["digest"] != digest:
        raise FetchError(f"--weights-uri names digest {match['digest']} but --weight-digest pins {digest}; "
                         f"{REFUSE}; fix: pass the weights_uri and weight_digest of one deployment manifest",
                         EXIT_INVALID)
    return bucket, prefix, match["model"]


def cached(dest: Path, digest: str, full: bool, workers: int) -> dict[str, Any] | None:
    """The marker of a verified ``dest`` for ``digest`` once its files check out; ``None`` when not cached.

    Raises :class:`FetchError` (exit 3) when the cached files differ from the marker's list.
    """
    try:
        marker = json.loads((dest / VERIFIED_MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("weight_digest") != digest:
        return None
    try:
        files = [ManifestFile.of(f) for f in marker.get("files", [])]
    except ValueError:
        return None
    if not files or weight_digest(files) != digest:
        return None
    if full:
        verification = verify_local_dir(dest, files, workers=workers, expected_weight_digest=digest,
                                        ignore=(MANIFEST_NAME, STAGED_MARKER, VERIFIED_MARKER))
        problems = verification.problems()
    else:
        problems = []
        for entry in files:
            path = dest / entry.path
            size = path.stat().st_size if path.is_file() else None
            if size is None:
                problems.append(f"{entry.path}: missing")
            elif size != entry.size:
                problems.append(f"{entry.path}: {size} bytes, the pinned drop has {entry.size}")
    if problems:
        raise FetchError(f"{dest}: the cached weights do not match weight digest {digest}; {REFUSE}:\n"
                         + "\n".join(f"  - {p}" for p in problems)
                         + f"\nfix: delete {dest} so the next start downloads the staged copy again", EXIT_MISMATCH)
    return marker


def fetch(s3: Any, bucket: str, prefix: str, model: str, digest: str, dest: Path, workers: int) -> dict[str, Any]:
    """Download the staged files into a temporary folder beside ``dest``, verify, rename into place."""
    try:
        files = read_staged_files(s3, bucket, model, digest)
    except StorageError as exc:
        raise FetchError(f"{exc}; {REFUSE}", EXIT_MISMATCH) from exc
    if files is None:
        raise FetchError(f"{s3_uri(bucket, prefix + STAGED_MARKER)} does not exist: the weights were never staged "
                         f"(or staging did not finish); fix: run the stage job for this drop", EXIT_INVALID)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        def download(entry: ManifestFile) -> int:
            target = tmp / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, prefix + entry.path, str(target))
            return entry.size

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="download") as pool:
            downloaded = sum(pool.map(download, files))
        try:
            verification = verify_local_dir(tmp, files, workers=workers, expected_weight_digest=digest)
        except IntegrityError as exc:
            raise FetchError(f"{exc}; {REFUSE}", EXIT_MISMATCH) from exc
        if not verification.ok:
            raise FetchError(f"{s3_uri(bucket, prefix)} downloaded but does not match weight digest {digest}; "
                             f"{REFUSE}:\n" + "\n".join(f"  - {p}" for p in verification.problems())
                             + "\nfix: stage the drop again (delete the staged prefix and re-run stage)",
                             EXIT_MISMATCH)
        marker = {"weight_digest": digest, "weights_uri": s3_uri(bucket, prefix),
                  "verified_at": datetime.now(UTC).isoformat(timespec="seconds"),
                  "files": [f.to_dict() for f in files]}
        (tmp / VERIFIED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _move_into_place(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**marker, "bytes_downloaded": downloaded}


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest`` in one step; an unverified ``dest`` left by an earlier attempt is replaced."""
    if dest.exists() or dest.is_symlink():
        stale = dest.with_name(f".{dest.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
        log.warning("%s exists without a valid %s marker; replacing it", dest, VERIFIED_MARKER)
        dest.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.rename(tmp, dest)


def main(argv: list[str] | None = None) -> int:
    """Make ``dest`` hold the verified pinned weights; exit 0, 2 (wrong input/not staged) or 3 (mismatch)."""
    args = parse_args(argv)
    started = time.monotonic()
    digest = args.weight_digest.strip().lower()
    dest = args.dest
    try:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise FetchError(f"--weight-digest {args.weight_digest!r} is not a SHA-256 hex digest; fix: pass the "
                             f"deployment manifest's weight_digest", EXIT_INVALID)
        bucket, prefix, model = parse_weights_uri(args.weights_uri, digest)
        marker = cached(dest, digest, args.full_verify, args.workers)
        if marker is not None:
            log.info("cache hit: %s holds verified weights %s (%d files, checked by %s)", dest, digest,
                     len(marker["files"]), "sha256" if args.full_verify else "size")
            cache_hit, downloaded = True, 0
        else:
            marker = fetch(client_from_env(), bucket, prefix, model, digest, dest, args.workers)
            cache_hit, downloaded = False, marker["bytes_downloaded"]
            log.info("fetched and verified %s -> %s (%d files, %d bytes)", args.weights_uri, dest,
                     len(marker["files"]), downloaded)
    except FetchError as exc:
        log.error("%s", exc)
        return exc.code
    write_result({"status": "ok", "dest": str(dest), "weight_digest": digest, "cache_hit": cache_hit,
                  "files": len(marker["files"]), "bytes_downloaded": downloaded,
                  "seconds": round(time.monotonic() - started, 3)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
