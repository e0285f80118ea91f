"""Pure decisions about a corpus snapshot: new types, drift, parity, expectations, verdict."""

from __future__ import annotations

import pytest

from llmops.corpus import checks
from llmops.corpus.shards import shard_count, shard_of

DECLARED = ("code", "heading", "list_item", "paragraph", "table")


def _tally(counts: dict[str, int]) -> checks.ContentTypeTally:
    tally = checks.ContentTypeTally()
    for content_type, n in counts.items():
        tally.add([content_type] * n, [f"{content_type}-{i}" for i in range(n)], ["doc"] * n, ["text"] * n)
    return tally


def _parity_ok() -> checks.Parity:
    return checks.check_parity(["a"], ["a"], {})


def _ok_expectations() -> list[dict]:
    return [{"type": "expect_column_values_to_be_in_set", "column": "content_type", "success": True,
             "unexpected_count": 0, "element_count": 10, "examples": []}]


def test_tally_counts_and_keeps_a_few_examples_per_type() -> None:
    tally = _tally({"paragraph": 8, "chart": 2})
    assert tally.counts == {"paragraph": 8, "chart": 2}
    assert len(tally.examples["paragraph"]) == checks.DEFAULT_EXAMPLES
    assert [e["chunk_id"] for e in tally.examples["chart"]] == ["chart-0", "chart-1"]
    tally.add_counts({"chart": 3}, {"chart": [{"chunk_id": "x", "doc_id": "d", "text": "t"}]})
    assert tally.counts["chart"] == 5 and tally.total == 13


def test_null_content_type_is_counted_as_its_own_unknown_type() -> None:
    tally = checks.ContentTypeTally()
    tally.add([None, "paragraph"], ["c1", "c2"], ["d", "d"], [None, "t"])
    assert checks.new_types(tally.counts, DECLARED) == {"<null>": 1}


def test_new_type_fails_with_count_and_examples_in_the_message() -> None:
    verdict = checks.snapshot_verdict(_tally({"paragraph": 10, "chart": 3}), DECLARED, None, _parity_ok(),
                            [{"type": "expect_column_values_to_be_in_set", "column": "content_type",
                              "success": False, "unexpected_count": 3, "element_count": 13, "examples": ["chart"]}])
    assert not verdict.passed
    assert "chart (3 chunks)" in verdict.message
    assert verdict.new_types["chart"]["count"] == 3
    assert len(verdict.new_types["chart"]["examples"]) == 3


def test_a_suite_that_accepts_an_undeclared_type_is_called_stale() -> None:
    verdict = checks.snapshot_verdict(_tally({"paragraph": 10, "chart": 1}), DECLARED, None, _parity_ok(),
                                      _ok_expectations())
    assert any("suite accepted" in r for r in verdict.reasons)


def test_vanished_and_fallen_types_against_the_previous_snapshot() -> None:
    previous = {"paragraph": 50, "table": 40, "code": 10}
    changes = checks.compare_with_previous({"paragraph": 95, "table": 5}, previous, DECLARED)
    kinds = {c.content_type: c.kind for c in changes}
    assert kinds == {"code": "vanished", "table": "fell"}
    assert "vanished" in changes[0].describe()


def test_a_smaller_corpus_with_the_same_mix_is_not_a_fall() -> None:
    previous = {"paragraph": 500, "table": 400}
    assert checks.compare_with_previous({"paragraph": 50, "table": 40}, previous, DECLARED) == []


def test_small_previous_counts_are_judged_only_when_they_vanish() -> None:
    previous = {"paragraph": 1000, "table": 5}
    assert checks.compare_with_previous({"paragraph": 1000, "table": 1}, previous, DECLARED) == []
    assert [c.kind for c in checks.compare_with_previous({"paragraph": 1000}, previous, DECLARED)] == ["vanished"]


def test_first_snapshot_has_nothing_to_compare() -> None:
    assert checks.compare_with_previous({"paragraph": 1}, None, DECLARED) == []


def test_type_drop_fails_unless_allowed() -> None:
    previous = {"paragraph": 50, "table": 50}
    tally = _tally({"paragraph": 20})
    refused = checks.snapshot_verdict(tally, DECLARED, previous, _parity_ok(), _ok_expectations())
    assert not refused.passed and "table: vanished" in refused.message
    allowed = checks.snapshot_verdict(tally, DECLARED, previous, _parity_ok(), _ok_expectations(), allow_type_drop=True)
    assert allowed.passed, allowed.reasons
    assert [c.content_type for c in allowed.type_changes] == ["table"]


def test_max_share_drop_must_be_a_fraction() -> None:
    with pytest.raises(ValueError):
        checks.compare_with_previous({"a": 1}, {"a": 1}, ["a"], max_share_drop=0)


def test_parity_holds_when_every_document_is_chunked_or_rejected_with_a_reason() -> None:
    parity = checks.check_parity(["a", "b", "c"], ["a", "b"], {"c": "pdf parser failed"})
    assert parity.ok and (parity.documents, parity.chunked, parity.rejected) == (3, 2, 1)


def test_parity_finds_lost_double_counted_and_unknown_documents() -> None:
    parity = checks.check_parity(["a", "b", "c", "d"], ["a", "b", "x"], {"b": "bad", "d": ""})
    assert parity.missing == ("c", "d")  # d was rejected without a reason
    assert parity.both == ("b",)
    assert parity.unknown == ("x",)
    assert not parity.ok and len(parity.problems()) == 3


def test_failed_expectations_are_summed_over_batches_and_reported() -> None:
    batch = {"type": "expect_column_value_lengths_to_be_between", "column": "text", "success": False,
             "unexpected_count": 2, "element_count": 10, "examples": ["x" * 900]}
    merged = checks.merge_expectation_results([[batch], [batch | {"success": True, "unexpected_count": 0}]])
    assert merged == [{"type": batch["type"], "column": "text", "success": False, "unexpected_count": 2,
                       "element_count": 20, "examples": ["x" * 900]}]
    verdict = checks.snapshot_verdict(_tally({"paragraph": 20}), DECLARED, None, _parity_ok(), merged)
    assert not verdict.passed
    assert "expect_column_value_lengths_to_be_between on text failed for 2 of 20" in verdict.message


def test_clean_snapshot_passes_and_an_empty_one_does_not() -> None:
    assert checks.snapshot_verdict(_tally({"paragraph": 3}), DECLARED, None, _parity_ok(), _ok_expectations()).passed
    empty = checks.snapshot_verdict(checks.ContentTypeTally(), DECLARED, None, checks.check_parity([], [], {}), [])
    assert not empty.passed and "no chunks" in empty.message


def test_verdict_report_is_json_ready() -> None:
    import json

    verdict = checks.snapshot_verdict(_tally({"paragraph": 3}), DECLARED, {"table": 20, "paragraph": 3},
                                      _parity_ok(), [])
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data["type_changes"][0]["content_type"] == "table" and data["parity"]["ok"] is True


def test_shards_are_stable_and_bounded() -> None:
    assert shard_count(0) == 1 and shard_count(1001, 500) == 3 and shard_count(10**6, 10, 64) == 64
    assert all(0 <= shard_of(f"doc-{i}", 7) < 7 for i in range(100))
    assert shard_of("guides/a.html", 5) == shard_of("guides/a.html", 5)
    assert len({shard_of(f"doc-{i}", 4) for i in range(100)}) == 4
    with pytest.raises(ValueError):
        shard_count(5, 0)


def test_parse_jobs_are_complete_pod_jobs_one_per_shard() -> None:
    from llmops.config import settings
    from llmops.core.podjob import PodJob
    from llmops.corpus import plan

    jobs = plan.parse_jobs(settings.load({}), "main", shards=3, bucket="llmops-corpus", run_id="manual__1",
                               parser_version="v2", s3_endpoint="http://127.0.0.1:9000",
                               tracking_uri="http://mlflow:5000")
    assert [PodJob.from_dict(j).name for j in jobs] == ["corpus-parse-0", "corpus-parse-1", "corpus-parse-2"]
    for shard, job in enumerate(jobs):
        args = job["main"]["args"]
        assert args[args.index("--shard") + 1] == str(shard)
        assert args[args.index("--parser-version") + 1] == "v2"
        assert not any("{{" in str(v) for v in (*args, *job["main"]["env"].values()))  # mapped: never rendered
        assert job["main"]["env"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
        assert set(job["main"]["secret_env"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
