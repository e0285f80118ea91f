"""Integrity verification and staging throughput, each against a baseline measured in the same run.

1. one file: ``integrity.sha256_file`` vs the system ``sha256sum`` over the same bytes;
2. a multi-file drop: the parallel verifier (``integrity.verify_local_dir``) vs one sequential
   ``sha256sum`` over all the files;
3. against a local ``moto_server``: streaming verification from S3 (``integrity.verify_drop``,
   nothing written to disk) vs download-to-disk then ``sha256sum``; and staging with server-side
   multipart copy (``staging.stage_drop``) vs a plain boto3 download-then-upload of the same drop.

Files are read from the page cache (each is read once before timing); every timing is the best
of ``--repeat`` runs. A ratio above 1 means this project's code is faster. Not part of the tests.

    PYTHONPATH=plugins .venv/bin/python bench/integrity.py [--size-mb 512] [--files 8 --file-mb 64]
        [--stage-files 4 --stage-mb 32] [--workers N] [--repeat 3] [--skip-s3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def _write_random(path: Path, size_mb: int) -> None:
    """``size_mb`` MiB of random bytes (1 MiB of urandom repeated with a counter, so it is fast)."""
    seed = os.urandom(MiB)
    with path.open("wb") as handle:
        for i in range(size_mb):
            handle.write(i.to_bytes(8, "little") + seed[8:])


def _warm(paths: list[Path]) -> None:
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(8 * MiB):
                pass


def _best(fn: Callable[[], Any], repeat: int, setup: Callable[[], Any] | None = None) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls of ``fn`` (``setup`` runs untimed before each)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        if setup is not None:
            setup()
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def _sha256sum(paths: list[Path]) -> dict[str, str]:
    out = subprocess.run(["sha256sum", *map(str, paths)], check=True, capture_output=True, text=True).stdout
    return {line.split(maxsplit=1)[1]: line.split(maxsplit=1)[0] for line in out.splitlines()}


def _row(name: str, seconds: float, size: int, baseline_s: float | None = None) -> dict[str, Any]:
    row = {"case": name, "seconds": round(seconds, 3), "MiB/s": round(size / MiB / seconds, 1)}
    if baseline_s is not None:
        row["speedup_vs_baseline"] = round(baseline_s / seconds, 2)
    print(f"  {name:<58} {seconds:7.3f} s  {size / MiB / seconds:8.1f} MiB/s"
          + (f"  x{baseline_s / seconds:.2f} vs baseline" if baseline_s is not None else ""))
    return row


def bench_local(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Single file and multi-file drop, local disk (page cache)."""
    from llmops.core.manifests import ManifestFile
    from llmops.io import integrity

    rows = []
    single = work / "single.bin"
    _write_random(single, args.size_mb)
    _warm([single])
    size = single.stat().st_size
    print(f"one file of {args.size_mb} MiB")
    base_s, base = _best(lambda: _sha256sum([single]), args.repeat)
    ours_s, ours = _best(lambda: integrity.sha256_file(single), args.repeat)
    assert ours == base[str(single)], "sha256_file disagrees with sha256sum"
    rows.append(_row("baseline: sha256sum", base_s, size))
    rows.append(_row("integrity.sha256_file", ours_s, size, base_s))
    single.unlink()

    drop = work / "drop"
    drop.mkdir()
    paths = [drop / f"model-{i + 1:05d}-of-{args.files:05d}.safetensors" for i in range(args.files)]
    for path in paths:
        _write_random(path, args.file_mb)
    _warm(paths)
    total = sum(p.stat().st_size for p in paths)
    print(f"drop of {args.files} x {args.file_mb} MiB, {args.workers} workers")
    base_s, base = _best(lambda: _sha256sum(paths), args.repeat)
    entries = [ManifestFile(p.name, p.stat().st_size, base[str(p)]) for p in paths]
    ours_s, result = _best(lambda: integrity.verify_local_dir(drop, entries, workers=args.workers), args.repeat)
    assert result.ok, result.message()
    rows.append(_row("baseline: sequential sha256sum", base_s, total))
    rows.append(_row(f"integrity.verify_local_dir (workers={args.workers})", ours_s, total, base_s))
    shutil.rmtree(drop)
    return rows


def bench_s3(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Streaming S3 verification and server-side staging against a local moto_server."""
    from llmops.embedded import s3state
    from llmops.embedded.services import Service, free_port
    from llmops.io import integrity
    from llmops.io import s3 as s3io
    from llmops.refresh import staging

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    port = free_port()
    service = Service(name="bench-s3", port=port, health_url=f"http://127.0.0.1:{port}/moto-api/",
                      argv=[str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                      run_dir=work / "run", start_timeout_s=60)
    service.start()
    rows = []
    try:
        s3 = s3io.client(endpoint_url=f"http://127.0.0.1:{port}")
        s3state.ensure_buckets(s3, ["bench-drops", "bench-models", "bench-copies"])
        files = []
        local = work / "upload"
        local.mkdir()
        for i in range(args.stage_files):
            path = local / f"model-{i + 1:05d}-of-{args.stage_files:05d}.safetensors"
            _write_random(path, args.stage_mb)
            s3.upload_file(str(path), "bench-drops", f"bench/r1/{path.name}")
            files.append({"path": path.name, "size": path.stat().st_size,
                          "sha256": integrity.sha256_file(path)})
            path.unlink()
        manifest_data = {"model": "bench", "model_family": "llama", "source": "bench", "revision": "r1",
                         "runtime_image": "vllm/vllm-openai@sha256:" + "0" * 64,
                         "created_at": "2026-11-23T00:00:00Z", "files": files}
        s3io.write_json(s3, "bench-drops", "bench/r1/manifest.json", manifest_data)
        manifest = staging.read_drop_manifest(s3, "bench-drops", "bench/r1/")
        total = manifest.total_size
        print(f"S3 drop of {args.stage_files} x {args.stage_mb} MiB on moto_server, {args.workers} workers")

        def download_and_hash() -> None:
            target = work / "download"
            target.mkdir(exist_ok=True)
            paths = []
            for f in manifest.files:
                paths.append(target / f.path)
                s3.download_file("bench-drops", f"bench/r1/{f.path}", str(paths[-1]))
            _sha256sum(paths)
            shutil.rmtree(target)

        base_s, _ = _best(download_and_hash, args.repeat)
        ours_s, result = _best(lambda: integrity.verify_drop(s3, "bench-drops", "bench/r1/", manifest.files,
                                                             workers=args.workers), args.repeat)
        assert result.ok, result.message()
        rows.append(_row("baseline: download to disk, then sha256sum", base_s, total))
        rows.append(_row(f"integrity.verify_drop, streaming (workers={args.workers})", ours_s, total, base_s))

        def download_then_upload() -> None:
            target = work / "copy"
            target.mkdir(exist_ok=True)
            for f in manifest.files:
                path = target / f.path
                s3.download_file("bench-drops", f"bench/r1/{f.path}", str(path))
                s3.upload_file(str(path), "bench-copies", f"models/bench/{f.path}")
                path.unlink()

        def unstage() -> None:  # stage from scratch every repeat
            for obj in s3io.list_prefix(s3, "bench-models", staging.staged_prefix("bench", manifest.weight_digest)):
                s3.delete_object(Bucket="bench-models", Key=obj.key)

        def stage() -> staging.StagingResult:
            return staging.stage_drop(s3, manifest, "bench-drops", "bench-models", part_size=args.part_mb * MiB,
                                      workers=args.workers)

        base_s, _ = _best(download_then_upload, args.repeat)
        ours_s, staged = _best(stage, args.repeat, setup=unstage)
        assert set(staged.copied) == {f.path for f in manifest.files}
        parts = sum(staged.parts.values())
        rows.append(_row("baseline: boto3 download_file + upload_file", base_s, total))
        rows.append(_row(f"staging.stage_drop, server-side multipart copy ({parts} parts)", ours_s, total, base_s))
        noop_s, again = _best(lambda: staging.stage_drop(s3, manifest, "bench-drops", "bench-models",
                                                         part_size=args.part_mb * MiB), 1)
        assert again.already_staged
        print(f"  {'re-staging the same drop (no-op)':<58} {noop_s:7.3f} s")
        rows.append({"case": "re-stage no-op", "seconds": round(noop_s, 3)})
    finally:
        service.stop()
    return rows


def main() -> None:
    """Run the benchmarks and print a table plus one JSON line with every figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=512, help="size of the single file (MiB)")
    parser.add_argument("--files", type=int, default=8, help="files in the local multi-file drop")
    parser.add_argument("--file-mb", type=int, default=64, help="size of each local drop file (MiB)")
    parser.add_argument("--stage-files", type=int, default=4, help="files in the S3 drop")
    parser.add_argument("--stage-mb", type=int, default=32, help="size of each S3 drop file (MiB)")
    parser.add_argument("--part-mb", type=int, default=8, help="multipart copy part size (MiB, >= 5)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="verification/copy threads")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best is kept)")
    parser.add_argument("--skip-s3", action="store_true", help="only the local cases")
    args = parser.parse_args()
    if shutil.which("sha256sum") is None:
        sys.exit("sha256sum not found: the baselines need GNU coreutils")
    print(f"python {sys.version.split()[0]}, OpenSSL via hashlib ({hashlib.sha256().name}), "
          f"{os.cpu_count()} CPUs")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as tmp:
        work = Path(tmp)
        rows = bench_local(work, args)
        if not args.skip_s3:
            rows += bench_s3(work, args)
    print(f"total {time.perf_counter() - started:.1f} s")
    print(json.dumps({"bench": "integrity", "args": vars(args), "results": rows}))


if __name__ == "__main__":
    main()
