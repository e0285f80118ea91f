"""Vector stores behind one small interface: an embedded default and a production option.

- :class:`LocalVectorIndex` (embedded default): a folder of segments, each a float32 ``.npy``
  matrix of unit vectors plus a Parquet file of chunk ids and payloads. Exact cosine search
  memory-maps one segment at a time, so memory stays bounded by a segment. The publish step
  builds it per snapshot and uploads it beside the snapshot's chunks.
- :class:`QdrantVectorStore` (production): Qdrant's REST API, one collection per snapshot and
  a collection alias per corpus swapped atomically on publish (the same pointer-swap idea as
  ``current.json``). Requests go through an injectable transport (default: urllib).
"""

from __future__ import annotations

import heapq
import json
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

Transport = Callable[[str, str, Mapping[str, Any] | None], Any]


class VectorStore(Protocol):
    """Where a snapshot's chunk vectors go."""

    def add(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Add vectors (unit norm) with their chunk ids and payloads."""
        ...

    def publish(self) -> dict[str, Any]:
        """Make what was added the live index of the corpus; return where it is."""
        ...

    def search(self, vector: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` nearest chunk ids by cosine similarity, best first."""
        ...


class LocalVectorIndex:
    """Embedded default: exact cosine search over memory-mapped segments in a folder."""

    def __init__(self, directory: str | Path, dim: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._segments = len(self._segment_files())

    def _segment_files(self) -> list[Path]:
        return sorted(self.directory.glob("segment-*.npy"))

    def add(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Write one segment."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(ids) != vectors.shape[0] or len(payloads) != len(ids):
            raise ValueError(f"ids ({len(ids)}), vectors {vectors.shape} and payloads ({len(payloads)}) must align")
        if self.dim is None:
            self.dim = vectors.shape[1]
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vector dimension {vectors.shape[1]} != index dimension {self.dim}")
        if not len(ids):
            return
        base = self.directory / f"segment-{self._segments:05d}"
        np.save(base.with_suffix(".npy"), vectors)
        pq.write_table(pa.table({"chunk_id": list(ids), "payload": [json.dumps(p, sort_keys=True) for p in payloads]}),
                       base.with_suffix(".parquet"))
        self._segments += 1

    def publish(self) -> dict[str, Any]:
        """Write ``index.json`` (segment list, dimension, count); the folder is then complete."""
        segments = [p.stem for p in self._segment_files()]
        count = sum(pq.ParquetFile(str(self.directory / f"{s}.parquet")).metadata.num_rows for s in segments)
        meta = {"kind": "local", "dim": self.dim, "segments": segments, "vectors": count, "metric": "cosine"}
        (self.directory / "index.json").write_text(json.dumps(meta, indent=2))
        return meta

    def search(self, vector: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """Exact top-``k`` by dot product of unit vectors, one segment in memory at a time."""
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        best: list[tuple[float, str]] = []
        for npy in self._segment_files():
            matrix = np.load(npy, mmap_mode="r")
            scores = matrix @ query
            top = np.argsort(-scores)[:k]
            ids = pq.read_table(npy.with_suffix(".parquet"), columns=["chunk_id"]).column(0).to_pylist()
            for row in top:
                item = (float(scores[row]), ids[row])
                if len(best) < k:
                    heapq.heappush(best, item)
                else:
                    heapq.heappushpop(best, item)
        return [(cid, score) for score, cid in sorted(best, reverse=True)]


def qdrant_point_id(chunk_id: str) -> str:
    """Qdrant ids are integers or UUIDs: a UUID derived from the chunk's SHA-256 id."""
    return str(uuid.UUID(hex=chunk_id[:32]))


def urllib_transport(base_url: str, api_key: str | None = None, timeout_s: float = 30.0) -> Transport:
    """A JSON-over-HTTP transport for :class:`QdrantVectorStore`."""

    def send(method: str, path: str, body: Mapping[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method,
                                         headers={"Content-Type": "application/json",
                                                  **({"api-key": api_key} if api_key else {})})
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return json.loads(answer.read() or b"null")

    return send


class QdrantVectorStore:
    """Production option: a Qdrant collection per snapshot, an alias per corpus."""

    def __init__(self, transport: Transport, *, corpus: str, snapshot_id: str, dim: int,
                 batch_size: int = 256) -> None:
        self.transport = transport
        self.alias = f"corpus-{corpus}"
        self.collection = f"corpus-{corpus}-{snapshot_id[:16]}"
        self.dim = dim
        self.batch_size = batch_size
        self._created = False

    def _ensure_collection(self) -> None:
        if not self._created:
            self.transport("PUT", f"/collections/{self.collection}",
                           {"vectors": {"size": self.dim, "distance": "Cosine"}})
            self._created = True

    def add(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Upsert points in batches (``wait=true``: the call returns once they are indexed)."""
        self._ensure_collection()
        vectors = np.asarray(vectors, dtype=np.float32)
        for start in range(0, len(ids), self.batch_size):
            points = [{"id": qdrant_point_id(cid), "vector": vectors[i].tolist(),
                       "payload": {"chunk_id": cid, **payloads[i]}}
                      for i, cid in enumerate(ids[start:start + self.batch_size], start=start)]
            self.transport("PUT", f"/collections/{self.collection}/points?wait=true", {"points": points})

    def publish(self) -> dict[str, Any]:
        """Point the corpus alias at this snapshot's collection in one atomic alias operation."""
        self._ensure_collection()
        self.transport("POST", "/collections/aliases", {"actions": [
            {"delete_alias": {"alias_name": self.alias}},
            {"create_alias": {"collection_name": self.collection, "alias_name": self.alias}},
        ]})
        return {"kind": "qdrant", "collection": self.collection, "alias": self.alias, "dim": self.dim}

    def search(self, vector: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """Query the live alias."""
        answer = self.transport("POST", f"/collections/{self.alias}/points/query",
                                {"query": np.asarray(vector, dtype=np.float32).tolist(), "limit": k,
                                 "with_payload": True})
        points = (answer or {}).get("result", {}).get("points", [])
        return [(p["payload"]["chunk_id"], float(p["score"])) for p in points]
