"""Shard planning (pure): which documents each parse pod job takes."""

from __future__ import annotations

import hashlib
import math

DEFAULT_DOCS_PER_SHARD = 500
DEFAULT_MAX_SHARDS = 64


def shard_count(documents: int, docs_per_shard: int = DEFAULT_DOCS_PER_SHARD,
                max_shards: int = DEFAULT_MAX_SHARDS) -> int:
    """Shards for ``documents`` (at least one, at most ``max_shards``)."""
    if docs_per_shard < 1 or max_shards < 1:
        raise ValueError(f"docs_per_shard ({docs_per_shard}) and max_shards ({max_shards}) must be >= 1")
    return max(1, min(max_shards, math.ceil(documents / docs_per_shard)))


def shard_of(doc_id: str, shards: int) -> int:
    """Stable shard of a document: the same document lands in the same shard on every run."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return int(hashlib.sha256(doc_id.encode()).hexdigest()[:12], 16) % shards
