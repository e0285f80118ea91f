"""The night's summary table, chart and final outcome (pure, the chart rendered with matplotlib)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.benchmarks import nightly
from llmops.benchmarks.regression import Policy, Sample, judge
from llmops.benchmarks.report import Row, html_table, markdown_table, outcome, render_chart

POLICY = Policy(window=5, min_history=3, metrics=("request_throughput_rps", "ttft_p99_ms"))


def _row(workload: str, throughput: float, hw: str = "cpu") -> Row:
    history = [Sample(f"n{i}", i, "c", "w", "r", {"request_throughput_rps": 100.0, "ttft_p99_ms": 50.0})
               for i in range(5)]
    verdict = judge(Sample("now", 10, "c", "w", "r", {"request_throughput_rps": throughput, "ttft_p99_ms": 50.0}),
                    history, POLICY)
    return Row(hw, "tiny-chat@default", workload, verdict.status, verdict=verdict.to_dict(),
               current={"request_throughput_rps": throughput})


def test_outcome_names_regressions_and_failures_and_reports_the_rest() -> None:
    rows = [_row("w-ok", 100.0), _row("w-bad", 40.0, hw="h100x1"),
            Row("cpu", "m@1", "w-new", "new_baseline"), Row("cpu", "m@1", "w-few", "insufficient_history"),
            Row("h200x1", "m@1", "w-err", "failed", error="vllm bench serve exited 1")]
    result = outcome(rows, [{"hardware_class": "b200x4", "model_label": "m@1", "model": "m"}])
    assert not result.passed
    assert len(result.regressions) == 1 and result.regressions[0].startswith("h100x1/tiny-chat@default/w-bad: ")
    assert "request_throughput_rps dropped 60.0%" in result.regressions[0]
    assert result.failures == ("h200x1/m@1/w-err: vllm bench serve exited 1",
                               "b200x4/m@1: the benchmark pod failed (see its task log)")
    assert result.new_baselines == ("cpu/m@1/w-new",) and result.insufficient == ("cpu/m@1/w-few",)
    message = result.message()
    assert "1 regression(s)" in message and "2 failed to run" in message and "new baseline: cpu/m@1/w-new" in message


def test_a_night_with_only_new_baselines_and_ok_passes() -> None:
    result = outcome([_row("w", 101.0), Row("cpu", "m", "w2", "new_baseline")])
    assert result.passed and "new baseline" in result.message()
    assert outcome([]).message() == "no benchmark ran"


def test_markdown_table_shows_ratios_and_marks_regressed_cells() -> None:
    table = markdown_table([_row("w-bad", 40.0), _row("w-ok", 100.0), Row("cpu", "m", "w-new", "new_baseline")])
    lines = table.strip().splitlines()
    assert lines[0].startswith("| class | model | workload | status | req/s |")
    bad = next(line for line in lines if "w-bad" in line)
    assert "**0.40!**" in bad and "| regression |" in bad
    ok = next(line for line in lines if "w-ok" in line)
    assert "| 1.00 |" in ok and "!" not in ok
    assert "| new baseline | - |" in next(line for line in lines if "w-new" in line)


def test_html_table_colours_regressions() -> None:
    text = html_table([_row("w-bad", 40.0), _row("w-good", 150.0)])
    assert "<td style='background:#f8d7da'>0.40</td>" in text
    assert "<td style='background:#d4edda'>1.50</td>" in text


def test_chart_is_a_png(tmp_path: Path) -> None:
    path = render_chart([_row("w-bad", 40.0), Row("cpu", "m", "w-new", "new_baseline")], str(tmp_path / "c.png"))
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    empty = render_chart([], str(tmp_path / "e.png"))
    assert Path(empty).read_bytes()[:4] == b"\x89PNG"


def test_rows_round_trip_through_dicts() -> None:
    row = _row("w", 40.0)
    assert Row.from_dict(row.to_dict()) == row


def test_failed_targets_are_planned_pods_without_a_result() -> None:
    targets = [{"hardware_class": "cpu", "model_key": "path:x", "role": "default"},
               {"hardware_class": "h100x1", "model_key": "sha256:1", "role": "champion"},
               {"hardware_class": "h100x1", "model_key": "sha256:2", "role": "challenger"}]
    results = [{"hardware_class": "cpu", "target": {"model_key": "path:x", "role": "default"}},
               {"hardware_class": "h100x1", "target": {"model_key": "sha256:2", "role": "challenger"}}]
    assert nightly.failed_targets(targets, results) == [targets[1]]
    assert nightly.failed_targets(targets, []) == targets


def test_final_check_fails_naming_what_regressed_or_failed() -> None:
    with pytest.raises(nightly.BenchmarkCheckFailed, match="the record step failed"):
        nightly.check(None)
    with pytest.raises(nightly.BenchmarkCheckFailed, match="1 regression"):
        nightly.check({"passed": False, "message": "1 regression(s): cpu/m/w: x", "summary_run_id": "r"})
    assert nightly.check({"passed": True, "message": "ok", "summary_run_id": "r"})["passed"] is True


@pytest.mark.parametrize("run_type, expected", [
    ("scheduled", "scheduled"), ("DagRunType.ASSET_TRIGGERED", "asset_triggered"), ("asset_triggered",
                                                                                     "asset_triggered"),
    ("manual", "manual"), (None, "manual"), ("backfill", "backfill"),
])
def test_trigger_of_run_types(run_type, expected) -> None:
    assert nightly.trigger_of(run_type) == expected
