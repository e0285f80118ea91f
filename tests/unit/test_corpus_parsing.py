"""Taxonomy and parser configs, the real parsers per format, chunking and the snapshot writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.corpus import snapshot
from llmops.corpus.chunking import chunk_elements, chunk_id, split_text
from llmops.corpus.config import (
    ChunkRules,
    CorpusConfigError,
    load_parser_config,
    load_suite_dict,
    load_taxonomy,
)
from llmops.corpus.fixture import fixture_documents
from llmops.corpus.parsers import Element, UnreadableDocument, format_of, parse_document


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, list[Element] | str]]:
    out: dict[str, dict] = {}
    for version in ("v1", "v2"):
        config = load_parser_config(version)
        out[version] = {}
        for name, data in fixture_documents().items():
            try:
                out[version][name] = parse_document(name, data, config)
            except UnreadableDocument as exc:
                out[version][name] = exc.reason
    return out


def test_shipped_taxonomy_and_parser_configs_load() -> None:
    taxonomy = load_taxonomy()
    assert taxonomy.version >= 1 and "paragraph" in taxonomy.content_types
    v1, v2 = load_parser_config("v1"), load_parser_config("v2")
    assert v1.emitted_types() <= set(taxonomy.content_types)
    assert v2.emitted_types() - set(taxonomy.content_types) == {"chart"}  # the simulated upgrade


def test_suite_placeholders_are_filled_from_taxonomy_and_chunk_rules() -> None:
    taxonomy = load_taxonomy()
    suite = load_suite_dict(taxonomy, ChunkRules(max_chars=300, min_chars=2))
    in_set = next(e for e in suite["expectations"] if e["type"] == "expect_column_values_to_be_in_set")
    assert in_set["kwargs"]["value_set"] == list(taxonomy.content_types)
    lengths = next(e for e in suite["expectations"] if e["type"] == "expect_column_value_lengths_to_be_between")
    assert (lengths["kwargs"]["min_value"], lengths["kwargs"]["max_value"]) == (2, 300)
    values = [v for e in suite["expectations"] for v in e["kwargs"].values()]
    assert not any(isinstance(v, str) and v.startswith("$") for v in values)


def test_bad_configs_name_file_field_and_fix(tmp_path: Path) -> None:
    bad_taxonomy = tmp_path / "taxonomy.yaml"
    bad_taxonomy.write_text("version: 1\ncontent_types:\n  Bad-Name: x\n")
    with pytest.raises(CorpusConfigError, match="Bad-Name.*fix: rename"):
        load_taxonomy(bad_taxonomy)
    parsers = tmp_path / "parsers"
    parsers.mkdir()
    (parsers / "v3.yaml").write_text(Path(load_parser_config("v1").path).read_text())
    with pytest.raises(CorpusConfigError, match="v3.yaml: field 'version' is 'v1'"):
        load_parser_config("v3", tmp_path)
    with pytest.raises(CorpusConfigError, match="must look like 'v1'"):
        load_parser_config("latest")
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"expectations": [{"type": "x", "kwargs": {"value_set": "$nope"}}]}))
    with pytest.raises(CorpusConfigError, match=r"kwargs.value_set = '\$nope'"):
        load_suite_dict(load_taxonomy(), ChunkRules(100), suite)


def test_every_format_yields_its_structural_types(parsed) -> None:
    types = {name: {e.content_type for e in elements} for name, elements in parsed["v1"].items()
             if not isinstance(elements, str)}
    assert types["guides/serving.html"] == {"heading", "paragraph", "list_item", "code", "table"}
    assert types["guides/canary.md"] == {"heading", "paragraph", "list_item", "code", "table"}
    assert types["runbooks/rollback.docx"] == {"heading", "paragraph", "list_item", "table"}
    assert types["papers/gates.pdf"] == {"paragraph"} and types["notes/reingest.txt"] == {"paragraph"}
    table = next(e for e in parsed["v1"]["guides/serving.html"] if e.content_type == "table")
    assert table.text.splitlines() == ["class | gpus", "h100x1 | 1", "b200x4 | 4"]
    pdf_text = " ".join(e.text for e in parsed["v1"]["papers/gates.pdf"])
    assert "Evaluation gates compare" in pdf_text and "p99 time to first token" in pdf_text


def test_parser_v2_emits_charts_where_v1_emitted_paragraphs(parsed) -> None:
    for name in ("guides/serving.html", "guides/canary.md"):
        v1 = [(e.content_type, e.text) for e in parsed["v1"][name]]
        v2 = [(e.content_type, e.text) for e in parsed["v2"][name]]
        changed = [(a, b) for a, b in zip(v1, v2, strict=True) if a != b]
        assert len(changed) == 1 and changed[0][0][0] == "paragraph" and changed[0][1][0] == "chart"
        assert "hart" in changed[0][1][1] or "canary" in changed[0][1][1]


def test_unreadable_documents_raise_with_a_reason(parsed) -> None:
    assert "pdf parser failed" in parsed["v1"]["papers/broken.pdf"]
    config = load_parser_config("v1")
    with pytest.raises(UnreadableDocument, match="unsupported format '.exe'"):
        format_of("tool.exe")
    with pytest.raises(UnreadableDocument, match="not UTF-8"):
        parse_document("a.txt", b"\xff\xfe\xfa", config)
    with pytest.raises(UnreadableDocument, match="no text extracted"):
        parse_document("a.md", b"   \n\n", config)
    with pytest.raises(UnreadableDocument, match="docx parser failed"):
        parse_document("a.docx", b"PK not a zip", config)


def test_split_text_respects_the_bound_and_cuts_at_spaces() -> None:
    rules = ChunkRules(max_chars=20)
    text = "alpha beta gamma delta epsilon zeta eta theta"
    pieces = split_text(text, rules)
    assert all(len(p) <= 20 for p in pieces) and " ".join(pieces) == text
    assert split_text("short", rules) == ["short"] and split_text("   ", rules) == []
    unbroken = split_text("x" * 45, rules)
    assert [len(p) for p in unbroken] == [20, 20, 5]
    overlapped = split_text("abcdefghij" * 4, ChunkRules(max_chars=20, overlap_chars=5))
    assert overlapped[0][-5:] == overlapped[1][:5]


def test_chunks_are_content_addressed_and_ordered() -> None:
    elements = [Element("heading", "Title"), Element("paragraph", "word " * 300)]
    rows = list(chunk_elements(elements, ChunkRules(max_chars=400), doc_id="d.md", source_uri="s3://b/d.md",
                               source_sha256="0" * 64, fmt="markdown", parser_version="v1"))
    assert [r.position for r in rows] == list(range(len(rows))) and len(rows) == 5
    assert rows[0].chunk_id == chunk_id("d.md", 0, "heading", "Title")
    assert len({r.chunk_id for r in rows}) == len(rows)
    again = list(chunk_elements(elements, ChunkRules(max_chars=400), doc_id="d.md", source_uri="s3://b/d.md",
                                source_sha256="0" * 64, fmt="markdown", parser_version="v1"))
    assert [r.chunk_id for r in again] == [r.chunk_id for r in rows]


def test_chunk_writer_streams_batches_and_both_readers_agree(tmp_path: Path) -> None:
    elements = [Element("paragraph", f"paragraph number {i}") for i in range(250)]
    rows = list(chunk_elements(elements, ChunkRules(max_chars=100), doc_id="d", source_uri="s3://b/d",
                               source_sha256="0" * 64, fmt="text", parser_version="v1"))
    with snapshot.ChunkWriter(tmp_path / "part.parquet", batch_rows=64) as writer:
        writer.write(rows)
    assert writer.rows == 250 and len(writer.sha256) == 64
    import pyarrow.parquet as pq

    assert pq.ParquetFile(str(writer.path)).metadata.num_row_groups == 4  # 64-row batches, never all at once
    direct = [t.num_rows for t in snapshot.iter_batches([writer.path], 100, engine="pyarrow")]
    via_datasets = [t.num_rows for t in snapshot.iter_batches([writer.path], 100, engine="datasets")]
    assert direct == via_datasets == [100, 100, 50]


def test_snapshot_ids_and_layout() -> None:
    a = snapshot.snapshot_id(["b" * 64, "a" * 64], "v1", 1)
    assert a == snapshot.snapshot_id(["a" * 64, "b" * 64], "v1", 1)
    assert a != snapshot.snapshot_id(["a" * 64, "b" * 64], "v2", 1)
    assert snapshot.pointer_key("main") == "corpus/main/current.json"
    assert snapshot.run_key("manual__2026-11-23T00:00:00+00:00") == "manual__2026-11-23T00_00_00_00_00"
    assert snapshot.shard_keys("main", "r", 3)[0] == "corpus/main/runs/r/shards/shard-00003.parquet"
    with pytest.raises(ValueError):
        snapshot.corpus_root("Main Corpus")
