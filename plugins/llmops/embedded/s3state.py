"""Buckets of the local S3 endpoint, and their copy on disk between platform runs.

moto keeps objects in memory, so the platform saves every bucket to
``<data>/s3/<bucket>/<key>`` when it stops and uploads them again when it starts:
a second run finds the drops, staged models and MLflow artifacts of the first.

Object keys are data, not paths: a key may hold ``..``, ``.``, empty segments (``a//b``, a
leading ``/``) or a ``%``. Every such segment is written as ``%x<hex of its UTF-8 bytes>``
(a form no plain segment takes, since plain segments hold no ``%``), so each object lands
inside its bucket's folder and comes back under exactly its key; a path that would still
resolve outside the folder is refused, naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_ENCODED = "%x"
_PART = ".part"  # suffix of a download in progress


class UnsafeKeyError(ValueError):
    """An object key maps to no path inside the save folder; the message names the key."""


def key_to_relpath(key: str) -> str:
    """The relative path an object key is saved under (see the module docstring)."""
    return "/".join(_segment(part) for part in key.split("/"))


def relpath_to_key(relpath: str) -> str:
    """The object key of a saved file's relative path (inverse of :func:`key_to_relpath`)."""
    return "/".join(bytes.fromhex(part[len(_ENCODED):]).decode() if part.startswith(_ENCODED) else part
                    for part in relpath.split("/"))


def _segment(part: str) -> str:
    plain = part not in ("", ".", "..") and "%" not in part and "\x00" not in part and not part.endswith(_PART)
    return part if plain else _ENCODED + part.encode().hex()


def _inside(root: Path, key: str) -> Path:
    path = (root / key_to_relpath(key)).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UnsafeKeyError(f"object key {key!r} would be saved outside {root}; fix: rename the object")
    return path


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
                path = _inside(target, obj["Key"])
                keep.add(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + _PART)
                s3.download_file(bucket, obj["Key"], str(tmp))
                tmp.replace(path)
                count += 1
        # Objects deleted from the endpoint are deleted from the copy too.
        for path in target.rglob("*"):
            if path.is_file() and path.resolve() not in keep:
                path.unlink()
    return count


def restore(s3: Any, root: Path) -> int:
    """Upload what :func:`save` wrote; return the number of objects."""
    if not root.exists():
        return 0
    count = 0
    for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        ensure_buckets(s3, [bucket_dir.name])
        for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file() and not p.name.endswith(_PART)):
            s3.upload_file(str(path), bucket_dir.name, relpath_to_key(path.relative_to(bucket_dir).as_posix()))
            count += 1
    return count
