"""Baseline, noise and regression verdicts of the nightly benchmarks (pure logic, no I/O)."""

from __future__ import annotations

import math
import statistics

import pytest

from llmops.benchmarks.regression import (
    MAD_TO_SIGMA,
    Policy,
    PolicyError,
    Sample,
    baseline_history,
    compare_metric,
    judge,
    robust_noise,
)

CONFIG_A = "a" * 64
CONFIG_B = "b" * 64
WORKLOAD = "w" * 64
RUNTIME = "0.32.0@sha256:" + "1" * 64


def sample(run_id: str, t: float, throughput: float = 100.0, ttft_p99: float = 200.0, *, config: str = CONFIG_A,
           workload: str = WORKLOAD, runtime: str = RUNTIME, **extra: float) -> Sample:
    metrics = {"request_throughput_rps": throughput, "ttft_p99_ms": ttft_p99, **extra}
    return Sample(run_id=run_id, started_at=t, config_hash=config, workload_hash=workload, runtime=runtime,
                  metrics=metrics)


def nights(values: list[float], **kwargs) -> list[Sample]:
    return [sample(f"n{i}", float(i), v, **kwargs) for i, v in enumerate(values)]


POLICY = Policy(window=5, min_history=3, throughput_threshold=0.05, latency_threshold=0.10, noise_k=3.0,
                metrics=("request_throughput_rps", "ttft_p99_ms"))


# -- noise -------------------------------------------------------------------------------------------

def test_noise_is_zero_without_spread() -> None:
    assert robust_noise([5.0], 5.0) == 0.0
    assert robust_noise([7.0, 7.0, 7.0], 7.0) == 0.0
    assert robust_noise([1.0, 2.0], 0.0) == 0.0


def test_noise_is_the_scaled_median_absolute_deviation_of_relative_values() -> None:
    values = [100.0, 104.0, 96.0, 100.0, 102.0]
    relative = [v / 100.0 - 1 for v in values]
    mid = statistics.median(relative)
    expected = MAD_TO_SIGMA * statistics.median(abs(r - mid) for r in relative)
    assert robust_noise(values, 100.0) == pytest.approx(expected)
    assert 0.0 < robust_noise(values, 100.0) < 0.05


def test_one_outlier_night_does_not_inflate_the_noise() -> None:
    quiet = [100.0, 101.0, 99.0, 100.0, 100.5]
    with_outlier = [*quiet[:-1], 300.0]
    stdev_ratio = statistics.stdev(with_outlier) / statistics.stdev(quiet)
    noise_ratio = robust_noise(with_outlier, statistics.median(with_outlier)) / robust_noise(
        quiet, statistics.median(quiet))
    assert stdev_ratio > 50
    assert noise_ratio < 3


def test_noise_is_relative_so_it_does_not_depend_on_units() -> None:
    values = [10.0, 11.0, 9.5, 10.2]
    scaled = [v * 1000 for v in values]
    assert robust_noise(values, statistics.median(values)) == pytest.approx(
        robust_noise(scaled, statistics.median(scaled)))


# -- which runs make the baseline ---------------------------------------------------------------------

def test_baseline_uses_only_earlier_runs_of_the_same_config_and_workload_newest_first() -> None:
    history = [
        sample("old-a", 1), sample("b", 2, config=CONFIG_B), sample("a2", 3), sample("other-w", 4, workload="x"),
        sample("a3", 5), sample("later", 20),
    ]
    current = sample("now", 10)
    used = baseline_history(current, [*history, current], window=10)
    assert [s.run_id for s in used] == ["a3", "a2", "old-a"]


def test_baseline_window_keeps_the_last_n_runs() -> None:
    history = nights([10.0, 10.0, 100.0, 100.0, 100.0])
    current = sample("now", 99.0)
    used = baseline_history(current, history, window=3)
    assert [s.run_id for s in used] == ["n4", "n3", "n2"]


# -- one metric ------------------------------------------------------------------------------------------

def test_throughput_drop_beyond_threshold_is_a_regression() -> None:
    c = compare_metric("request_throughput_rps", 90.0, [100.0, 100.0, 100.0], POLICY)
    assert c.status == "regression"
    assert c.baseline == 100.0 and c.change == pytest.approx(-0.10) and c.ratio == pytest.approx(0.90)
    assert c.tolerance == pytest.approx(0.05) and c.noise == 0.0


def test_throughput_drop_within_threshold_is_ok_and_a_rise_is_an_improvement() -> None:
    assert compare_metric("request_throughput_rps", 96.0, [100.0] * 3, POLICY).status == "ok"
    assert compare_metric("request_throughput_rps", 120.0, [100.0] * 3, POLICY).status == "improvement"


def test_latency_rise_is_a_regression_and_a_fall_an_improvement() -> None:
    assert compare_metric("ttft_p99_ms", 230.0, [200.0] * 3, POLICY).status == "regression"
    assert compare_metric("ttft_p99_ms", 215.0, [200.0] * 3, POLICY).status == "ok"  # +7.5% < 10% threshold
    assert compare_metric("ttft_p99_ms", 150.0, [200.0] * 3, POLICY).status == "improvement"


def test_each_direction_uses_its_own_threshold() -> None:
    # +8%: under the latency threshold (10%), over the throughput threshold (5%).
    assert compare_metric("ttft_p99_ms", 216.0, [200.0] * 3, POLICY).status == "ok"
    assert compare_metric("request_throughput_rps", 92.0, [100.0] * 3, POLICY).status == "regression"


def test_a_change_exactly_at_the_tolerance_is_not_flagged() -> None:
    policy = Policy(window=3, min_history=1, throughput_threshold=0.25, metrics=("request_throughput_rps",))
    assert compare_metric("request_throughput_rps", 75.0, [100.0], policy).status == "ok"
    assert compare_metric("request_throughput_rps", 74.9, [100.0], policy).status == "regression"


def test_noisy_history_widens_the_tolerance() -> None:
    quiet = [100.0, 100.5, 99.5, 100.0, 100.2]
    noisy = [100.0, 115.0, 85.0, 100.0, 110.0]
    quiet_verdict = compare_metric("request_throughput_rps", 80.0, quiet, POLICY)
    noisy_verdict = compare_metric("request_throughput_rps", 80.0, noisy, POLICY)
    assert quiet_verdict.status == "regression"
    assert quiet_verdict.tolerance == pytest.approx(POLICY.throughput_threshold)
    assert noisy_verdict.status == "ok"
    assert noisy_verdict.tolerance == pytest.approx(POLICY.noise_k * noisy_verdict.noise)
    assert noisy_verdict.tolerance > 0.20
    # Noise never makes the check stricter than the threshold.
    assert noisy_verdict.tolerance >= POLICY.throughput_threshold


def test_the_baseline_is_the_median_so_one_bad_night_does_not_move_it() -> None:
    c = compare_metric("request_throughput_rps", 99.0, [100.0, 101.0, 10.0, 100.0, 99.0], POLICY)
    assert c.baseline == 100.0 and c.status == "ok"


@pytest.mark.parametrize("current, history", [
    (None, [100.0]), (math.nan, [100.0]), (math.inf, [100.0]), (100.0, []), (100.0, [math.nan]),
])
def test_missing_values_are_reported_as_missing_not_judged(current, history) -> None:
    assert compare_metric("request_throughput_rps", current, history, POLICY).status == "missing"


def test_a_zero_baseline_has_no_ratio() -> None:
    c = compare_metric("goodput_rps", 0.0, [0.0, 0.0, 0.0], POLICY)
    assert c.status == "missing" and c.ratio is None


# -- whole verdicts --------------------------------------------------------------------------------------

def test_the_first_run_ever_starts_the_baseline_as_insufficient_history() -> None:
    verdict = judge(sample("now", 10), [], POLICY)
    assert verdict.status == "insufficient_history"
    assert verdict.comparisons == () and "first run" in verdict.reasons[0]


def test_fewer_than_min_history_matching_runs_is_insufficient_history_not_a_regression() -> None:
    verdict = judge(sample("now", 10, throughput=1.0), nights([100.0, 100.0]), POLICY)
    assert verdict.status == "insufficient_history"
    assert verdict.baseline_runs == ("n1", "n0")
    assert "2 earlier run(s)" in verdict.reasons[0] and "3 needed" in verdict.reasons[0]


def test_a_config_change_starts_a_new_baseline_and_says_so() -> None:
    verdict = judge(sample("now", 10, throughput=1.0, config=CONFIG_B), nights([100.0] * 5), POLICY)
    assert verdict.status == "new_baseline"
    assert verdict.regressions == ()
    assert "hardware config changed" in verdict.reasons[0]
    assert CONFIG_A[:12] in verdict.reasons[0] and CONFIG_B[:12] in verdict.reasons[0]


def test_a_changed_workload_definition_starts_a_new_baseline() -> None:
    verdict = judge(sample("now", 10, workload="v" * 64), nights([100.0] * 5), POLICY)
    assert verdict.status == "new_baseline"
    assert "workload definition changed" in verdict.reasons[0]


def test_a_config_reverted_to_an_earlier_one_is_compared_with_that_config_history() -> None:
    history = [*nights([100.0] * 3), sample("b1", 5, 50.0, config=CONFIG_B), sample("b2", 6, 50.0, config=CONFIG_B)]
    verdict = judge(sample("now", 10, throughput=99.0), history, POLICY)
    assert verdict.status == "ok"
    assert set(verdict.baseline_runs) == {"n0", "n1", "n2"}


def test_a_regression_names_each_regressed_metric_with_its_numbers() -> None:
    verdict = judge(sample("now", 10, throughput=50.0, ttft_p99=800.0), nights([100.0] * 5), POLICY)
    assert verdict.status == "regression"
    assert {c.metric for c in verdict.regressions} == {"request_throughput_rps", "ttft_p99_ms"}
    text = " ".join(verdict.reasons)
    assert "request_throughput_rps dropped 50.0%" in text and "ttft_p99_ms rose 300.0%" in text


def test_a_steady_night_is_ok() -> None:
    history = nights([100.0, 98.0, 103.0, 101.0, 99.0])
    verdict = judge(sample("now", 10, throughput=100.5, ttft_p99=205.0), history, POLICY)
    assert verdict.status == "ok"
    assert all(c.status == "ok" for c in verdict.comparisons)
    assert len(verdict.baseline_runs) == POLICY.window


def test_a_runtime_change_is_compared_against_the_old_baseline_and_named() -> None:
    new_runtime = "0.33.0@sha256:" + "2" * 64
    verdict = judge(sample("now", 10, throughput=70.0, runtime=new_runtime), nights([100.0] * 5), POLICY)
    assert verdict.status == "regression"
    assert verdict.runtime_change is not None and "0.33.0" in verdict.runtime_change
    assert verdict.runtime_change in verdict.reasons


def test_a_requalified_pinned_runtime_starts_a_new_baseline_and_reports_the_old_ratio() -> None:
    from dataclasses import replace

    new_runtime = "0.33.0@sha256:" + "2" * 64
    old_nights = [replace(s, runtime_pinned=True) for s in nights([100.0] * 5)]
    first = replace(sample("now", 10, throughput=70.0, runtime=new_runtime), runtime_pinned=True)
    verdict = judge(first, old_nights, POLICY)
    assert verdict.status == "new_baseline"
    [reason] = verdict.reasons
    assert reason.startswith(f"runtime re-qualified ({RUNTIME} -> {new_runtime}): new baseline")
    assert "request_throughput_rps x0.700" in reason  # the slower runtime is visible the night it lands
    # Later nights on the re-qualified runtime are judged against its own runs only.
    later = [replace(sample(f"r{i}", 11.0 + i, throughput=70.0, runtime=new_runtime), runtime_pinned=True)
             for i in range(4)]
    tonight = replace(sample("tonight", 20, throughput=69.0, runtime=new_runtime), runtime_pinned=True)
    settled = judge(tonight, [*old_nights, first, *later], POLICY)
    assert settled.status == "ok" and "n0" not in settled.baseline_runs
    # An unpinned run (the default checkpoint on the platform's image) keeps the old baseline.
    assert judge(sample("now", 10, throughput=70.0, runtime=new_runtime), nights([100.0] * 5),
                 POLICY).status == "regression"


def test_the_run_itself_and_later_runs_never_count_as_its_history() -> None:
    current = sample("now", 10, throughput=50.0)
    history = [current, *nights([100.0, 100.0]), sample("later", 11, 50.0), sample("later2", 12, 50.0)]
    verdict = judge(current, history, POLICY)
    assert verdict.status == "insufficient_history"
    assert set(verdict.baseline_runs) == {"n0", "n1"}


def test_metrics_not_gated_by_the_policy_are_not_judged() -> None:
    verdict = judge(sample("now", 10, ttft_mean_ms=1e9), nights([100.0] * 5, ttft_mean_ms=1.0), POLICY)
    assert verdict.status == "ok"
    assert "ttft_mean_ms" not in {c.metric for c in verdict.comparisons}


def test_verdict_to_dict_is_json_able_and_carries_ratios() -> None:
    import json

    verdict = judge(sample("now", 10, throughput=50.0), nights([100.0] * 5), POLICY)
    data = json.loads(json.dumps(verdict.to_dict()))
    throughput = next(c for c in data["comparisons"] if c["metric"] == "request_throughput_rps")
    assert throughput["ratio"] == pytest.approx(0.5) and throughput["status"] == "regression"


# -- policy ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, fragment", [
    ({"window": 0}, "window"),
    ({"window": 3, "min_history": 4}, "min_history"),
    ({"min_history": 0}, "min_history"),
    ({"throughput_threshold": -0.1}, "throughput_threshold"),
    ({"latency_threshold": math.nan}, "latency_threshold"),
    ({"noise_k": math.inf}, "noise_k"),
    ({"metrics": ("request_throughput_rps", "ttft_p42_ms")}, "ttft_p42_ms"),
])
def test_an_impossible_policy_is_refused_naming_the_field(kwargs, fragment) -> None:
    with pytest.raises(PolicyError, match=fragment):
        Policy(**kwargs)


def test_policy_from_dict_refuses_unknown_keys() -> None:
    with pytest.raises(PolicyError, match=r"unknown regression policy keys \['treshold'\]"):
        Policy.from_dict({"treshold": 0.1})
    assert Policy.from_dict({"metrics": ["goodput_rps"]}).metrics == ("goodput_rps",)
    assert Policy.from_dict(None) == Policy()
