"""Parsing real `vllm bench serve` results (tests/fixtures/bench: produced by the real tool against
the tiny model on the cpu class, through the benchmark pod job; see bench/benchmarks_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.benchmarks import results
from llmops.benchmarks.metrics import BY_NAME, LATENCIES, METRICS, PERCENTILES, mlflow_key
from llmops.benchmarks.results import BenchResultError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench"
RAW = sorted(p for p in FIXTURES.glob("cpu-*.json") if not p.name.endswith("-return.json"))
CPU_SLO = {"ttft": 1000.0, "tpot": 100.0}


def test_fixtures_are_present() -> None:
    assert len(RAW) >= 8, f"expected the real vllm bench serve results in {FIXTURES}"


@pytest.mark.parametrize("path", RAW, ids=lambda p: p.name)
def test_real_results_parse_into_every_stable_metric(path: Path) -> None:
    parsed = results.load(path, CPU_SLO)
    assert set(parsed.metrics) == set(BY_NAME), set(BY_NAME) ^ set(parsed.metrics)
    for latency in LATENCIES:
        p50, p90, p99 = (parsed.metrics[f"{latency}_p{p}_ms"] for p in PERCENTILES)
        assert 0 <= p50 <= p90 <= p99, latency
    raw = json.loads(path.read_text())
    assert parsed.metrics["ttft_p99_ms"] == raw["p99_ttft_ms"]
    assert parsed.metrics["request_throughput_rps"] == raw["request_throughput"]
    assert parsed.metrics["completed"] == raw["completed"] == raw["num_prompts"]
    assert parsed.requests == raw["num_prompts"] and parsed.metrics["failed"] == 0
    # ignore_eos: every request generated exactly the workload's output length.
    assert set(raw["output_lens"]) == {int(path.stem.split("-out")[1].split("-")[0])}


@pytest.mark.parametrize("path", RAW, ids=lambda p: p.name)
def test_recomputed_goodput_equals_the_tools_own(path: Path) -> None:
    raw = json.loads(path.read_text())
    parsed = results.parse(raw, path.name, CPU_SLO)
    assert raw["request_goodput"] is not None, "fixtures are made with --goodput ttft:1000 tpot:100"
    assert parsed.goodput_recomputed == pytest.approx(raw["request_goodput"], rel=1e-12)
    assert parsed.metrics["goodput_rps"] <= parsed.metrics["request_throughput_rps"] + 1e-9


def test_goodput_against_a_stricter_slo_is_lower() -> None:
    raw = json.loads(RAW[0].read_text())
    loose = results.parse(raw, "r", {"ttft": 1e9, "tpot": 1e9}).metrics["goodput_rps"]
    strict_ttft = sorted(raw["ttfts"])[len(raw["ttfts"]) // 2] * 1000  # the median TTFT, in ms
    strict = results.parse(raw, "r", {"ttft": strict_ttft}).metrics["goodput_rps"]
    assert loose == pytest.approx(raw["request_throughput"])
    assert strict < loose


def test_the_summary_drops_per_request_arrays() -> None:
    parsed = results.load(RAW[0], CPU_SLO)
    assert "ttfts" not in parsed.summary and "generated_texts" not in parsed.summary
    assert parsed.summary["p99_ttft_ms"] == parsed.metrics["ttft_p99_ms"]
    assert len(json.dumps(parsed.to_dict())) < 10_000


def test_without_details_the_tools_goodput_is_kept() -> None:
    raw = {k: v for k, v in json.loads(RAW[0].read_text()).items() if k not in results.DETAIL_KEYS}
    parsed = results.parse(raw, "r", CPU_SLO)
    assert parsed.goodput_recomputed is None and parsed.metrics["goodput_rps"] == raw["request_goodput"]
    raw["request_goodput"] = None  # run without --goodput
    assert "goodput_rps" not in results.parse(raw, "r").metrics


def test_a_result_without_the_percentiles_says_which_flags_to_add() -> None:
    raw = json.loads(RAW[0].read_text())
    del raw["p90_itl_ms"]
    with pytest.raises(BenchResultError) as err:
        results.parse(raw, "night.json")
    assert err.value.field == "p90_itl_ms"
    assert "--percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99" in str(err.value)


@pytest.mark.parametrize("change, field", [
    ({"duration": None}, "duration"), ({"request_throughput": "fast"}, "request_throughput"),
    ({"completed": True}, "completed"), ({"duration": 0}, "duration"),
])
def test_broken_results_name_the_field(change: dict, field: str) -> None:
    raw = {**json.loads(RAW[0].read_text()), **change}
    with pytest.raises(BenchResultError) as err:
        results.parse(raw, "night.json")
    assert err.value.field == field and str(err.value).startswith("night.json: ")


def test_mismatched_per_request_arrays_are_refused() -> None:
    raw = json.loads(RAW[0].read_text())
    raw["ttfts"] = raw["ttfts"][:-1]
    with pytest.raises(BenchResultError, match="per-request arrays differ in length"):
        results.parse(raw, "r", CPU_SLO)


def test_not_a_result_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(BenchResultError, match=r"x.json: \(file\): not valid JSON"):
        results.load(bad)
    with pytest.raises(BenchResultError, match="expected a JSON object"):
        results.parse([1, 2], "list.json")


def test_metric_names_are_stable_and_prefixed() -> None:
    assert mlflow_key("ttft_p99_ms") == "bench/ttft_p99_ms"
    assert len({m.name for m in METRICS}) == len(METRICS)
    with pytest.raises(KeyError, match="unknown benchmark metric"):
        mlflow_key("p99_ttft_ms")
