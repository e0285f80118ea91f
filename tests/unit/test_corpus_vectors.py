"""Offline embeddings and the two vector stores (Qdrant: request construction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmops.corpus.embedding import load_embedder, normalise
from llmops.corpus.vectorstore import LocalVectorIndex, QdrantVectorStore, qdrant_point_id


def test_shipped_embedding_model_loads_offline_and_ranks_related_text_higher(monkeypatch) -> None:
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("the embedder tried to download something")

    monkeypatch.setattr(requests, "get", no_network)
    embedder = load_embedder()
    vectors = embedder.embed(["canary rollback of a model", "rolling back the canary model", "a recipe for soup"])
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    with pytest.raises(ValueError, match="not available offline"):
        load_embedder("some-hub-model")


def test_normalise_leaves_zero_rows_alone() -> None:
    out = normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0, 0]])


def test_local_index_exact_search_across_segments(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    index = LocalVectorIndex(tmp_path, dim=8)
    vectors = normalise(rng.normal(size=(30, 8)))
    ids = [f"c{i}" for i in range(30)]
    for start in (0, 10, 20):
        index.add(ids[start:start + 10], vectors[start:start + 10], [{"i": i} for i in range(start, start + 10)])
    meta = index.publish()
    assert meta["vectors"] == 30 and len(meta["segments"]) == 3
    expected = [ids[i] for i in np.argsort(-(vectors @ vectors[17]))[:4]]
    assert [cid for cid, _ in LocalVectorIndex(tmp_path).search(vectors[17], k=4)] == expected
    with pytest.raises(ValueError, match="dimension"):
        index.add(["x"], np.ones((1, 4)), [{}])


def test_qdrant_store_builds_collection_upserts_and_alias_swap() -> None:
    calls = []

    def transport(method, path, body):
        calls.append((method, path, body))
        return {"result": {"points": [{"score": 0.9, "payload": {"chunk_id": "a" * 64}}]}}

    store = QdrantVectorStore(transport, corpus="main", snapshot_id="f" * 64, dim=2, batch_size=2)
    store.add(["a" * 64, "b" * 64, "c" * 64], np.eye(3, 2, dtype=np.float32), [{"doc_id": "d"}] * 3)
    published = store.publish()
    assert calls[0] == ("PUT", "/collections/corpus-main-ffffffffffffffff",
                        {"vectors": {"size": 2, "distance": "Cosine"}})
    upserts = [c for c in calls if c[1].endswith("/points?wait=true")]
    assert [len(c[2]["points"]) for c in upserts] == [2, 1]
    first = upserts[0][2]["points"][0]
    assert first["id"] == qdrant_point_id("a" * 64) and first["payload"] == {"chunk_id": "a" * 64, "doc_id": "d"}
    assert calls[-1] == ("POST", "/collections/aliases", {"actions": [
        {"delete_alias": {"alias_name": "corpus-main"}},
        {"create_alias": {"collection_name": "corpus-main-ffffffffffffffff", "alias_name": "corpus-main"}}]})
    assert published["alias"] == "corpus-main"
    assert store.search(np.array([1.0, 0.0]), k=1) == [("a" * 64, 0.9)]
    assert calls[-1][1] == "/collections/corpus-main/points/query"
