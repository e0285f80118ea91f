"""Buckets of the local S3 endpoint, and their copy on disk between platform runs.

moto keeps objects in memory, so the platform saves every bucket to
``<data>/s3/<bucket>/<key>`` when it stops and uploads them again when it starts:
a second run finds the drops, staged models and MLflow artifacts of the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ensure_buckets(s3: Any, buckets: list[str]) -> list[str]:
    """Create the buckets that do not exist yet; return those created."""
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    created = []
    for bucket in buckets:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
            created.append(bucket)
    return created


def save(s3: Any, root: Path) -> int:
    """Write every object of every bucket under ``root``; return the number of objects."""
    count = 0
    for bucket in (b["Name"] for b in s3.list_buckets().get("Buckets", [])):
        target = root / bucket
        target.mkdir(parents=True, exist_ok=True)
        keep: set[Path] = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                path = target / obj["Key"]
                keep.add(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".part")
                s3.download_file(bucket, obj["Key"], str(tmp))
                tmp.replace(path)
                count += 1
        # Objects deleted from the endpoint are deleted from the copy too.
        for path in target.rglob("*"):
            if path.is_file() and path not in keep:
                path.unlink()
    return count


def restore(s3: Any, root: Path) -> int:
    """Upload what :func:`save` wrote; return the number of objects."""
    if not root.exists():
        return 0
    count = 0
    for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        ensure_buckets(s3, [bucket_dir.name])
        for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file() and not p.name.endswith(".part")):
            s3.upload_file(str(path), bucket_dir.name, path.relative_to(bucket_dir).as_posix())
            count += 1
    return count
