"""Canary analysis and state machine: spec validation, step verdicts, failure limit, rollback timing."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from llmops.canary.analysis import (
    DEFAULT_STEPS,
    Action,
    ActionKind,
    Approval,
    CanaryError,
    CanarySpec,
    CanarySpecError,
    CanaryStep,
    Outcome,
    StepVerdict,
    WindowMetrics,
    analyze_step,
    breach_time,
    breach_to_rollback_s,
    load_history,
    next_action,
)

SPEC = CanarySpec(
    steps=(CanaryStep(5, 60), CanaryStep(25, 60), CanaryStep(50, 60)),
    failure_limit=2, max_error_rate_increase=0.02, max_ttft_p95_ratio=1.25, min_quality=0.7,
    min_requests=100, min_quality_samples=10, max_holds=3,
)


def metrics(requests: int = 1000, errors: int = 10, ttft: float | None = 200.0, quality_samples: int = 50,
            quality: float | None = 0.9, end_s: float | None = None) -> WindowMetrics:
    return WindowMetrics(requests=requests, errors=errors, ttft_p95_ms=ttft, quality_samples=quality_samples,
                         quality_mean=quality, start_s=None if end_s is None else end_s - 60, end_s=end_s)


def simulated_window(rng: random.Random, requests: int, error_rate: float, ttft_median_ms: float,
                     quality: float, end_s: float) -> WindowMetrics:
    """Seeded synthetic traffic: per-request errors, log-normal TTFTs, sampled quality scores."""
    errors = sum(rng.random() < error_rate for _ in range(requests))
    ttfts = sorted(rng.lognormvariate(0, 0.3) * ttft_median_ms for _ in range(requests - errors))
    samples = [min(1.0, max(0.0, rng.gauss(quality, 0.05))) for _ in range(max(1, requests // 20))]
    return WindowMetrics(requests=requests, errors=errors,
                         ttft_p95_ms=ttfts[int(0.95 * (len(ttfts) - 1))] if ttfts else None,
                         quality_samples=len(samples), quality_mean=sum(samples) / len(samples),
                         start_s=end_s - 60, end_s=end_s)


Measure = Callable[[Action, random.Random, float], tuple[WindowMetrics, WindowMetrics]]


def run_rollout(spec: CanarySpec, measure: Measure, seed: int = 0,
                approve: bool = True) -> tuple[list[Action], list[StepVerdict | Approval]]:
    """The I/O side's loop, with measurements simulated: execute actions until a terminal one."""
    rng, clock = random.Random(seed), 1_000.0
    actions: list[Action] = []
    history: list[StepVerdict | Approval] = []
    for _ in range(50):
        action = next_action(spec, history)
        actions.append(action)
        if action.kind is ActionKind.AWAIT_APPROVAL and approve:
            history.append(Approval(approved_by="ops"))
            continue
        if action.kind is not ActionKind.OBSERVE:
            return actions, history
        clock += action.window_s or 0
        canary, stable = measure(action, rng, clock)
        assert action.step_index is not None
        history.append(analyze_step(spec, action.step_index, canary, stable, action.failures_so_far))
    raise AssertionError("the rollout did not terminate")


def healthy(action: Action, rng: random.Random, clock: float) -> tuple[WindowMetrics, WindowMetrics]:
    canary_requests = 40 * action.weight
    return (simulated_window(rng, canary_requests, 0.01, 200, 0.9, clock),
            simulated_window(rng, 4000 - canary_requests, 0.01, 200, 0.9, clock))


def erroring(action: Action, rng: random.Random, clock: float) -> tuple[WindowMetrics, WindowMetrics]:
    canary_requests = 40 * action.weight
    return (simulated_window(rng, canary_requests, 0.20, 200, 0.9, clock),
            simulated_window(rng, 4000 - canary_requests, 0.01, 200, 0.9, clock))


# --- spec ---------------------------------------------------------------------------------------------------------

def test_default_spec_is_5_25_50_with_windows() -> None:
    spec = CanarySpec()
    assert [s.weight for s in spec.steps] == [5, 25, 50]
    assert all(s.window_s > 0 for s in spec.steps) and spec.steps == DEFAULT_STEPS
    assert spec.failure_limit >= 1


@pytest.mark.parametrize(("steps", "field", "match"), [
    ((), "steps", "non-empty"),
    ((CanaryStep(25, 60), CanaryStep(5, 60)), "steps[1].weight", "not greater than the previous step's 25"),
    ((CanaryStep(25, 60), CanaryStep(25, 60)), "steps[1].weight", "increase strictly"),
    ((CanaryStep(0, 60),), "steps[0].weight", r"in \(0, 100\]"),
    ((CanaryStep(101, 60),), "steps[0].weight", r"in \(0, 100\]"),
    ((CanaryStep(-5, 60),), "steps[0].weight", "integer percent"),
    ((CanaryStep(5.5, 60),), "steps[0].weight", "integer percent"),  # type: ignore[arg-type]
    ((CanaryStep(5, 0),), "steps[0].window_s", "positive number of seconds"),
    ((CanaryStep(5, -1),), "steps[0].window_s", "positive number of seconds"),
    ((CanaryStep(5, 60), CanaryStep(50, float("nan"))), "steps[1].window_s", "positive"),
    (["not a step"], "steps", "tuple"),
])
def test_spec_step_errors_name_the_field(steps: tuple[CanaryStep, ...], field: str, match: str) -> None:
    with pytest.raises(CanarySpecError, match=match) as info:
        CanarySpec(steps=steps)
    assert info.value.field == field
    assert field in str(info.value)


def test_weight_of_100_is_a_valid_last_step() -> None:
    assert CanarySpec(steps=(CanaryStep(10, 1), CanaryStep(100, 1))).steps[-1].weight == 100


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"failure_limit": 0}, "failure_limit"),
    ({"failure_limit": True}, "failure_limit"),
    ({"min_requests": 0}, "min_requests"),
    ({"min_quality_samples": 0}, "min_quality_samples"),
    ({"max_holds": 0}, "max_holds"),
    ({"max_error_rate_increase": -0.01}, "max_error_rate_increase"),
    ({"max_error_rate_increase": 1.5}, "max_error_rate_increase"),
    ({"max_ttft_p95_ratio": 0.9}, "max_ttft_p95_ratio"),
    ({"min_quality": 1.5}, "min_quality"),
    ({"require_approval": "yes"}, "require_approval"),
])
def test_spec_threshold_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(CanarySpecError) as info:
        CanarySpec(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field and str(info.value).startswith(f"canary spec {field}: ")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(CanarySpecError, match="3 problems") as info:
        CanarySpec(steps=(CanaryStep(50, 60), CanaryStep(5, 0)), failure_limit=0)
    assert [name for name, _ in info.value.problems] == ["steps[1].weight", "steps[1].window_s", "failure_limit"]


def test_spec_round_trips_through_plain_data() -> None:
    data = SPEC.to_dict()
    assert data["steps"] == [{"weight": 5, "window_s": 60}, {"weight": 25, "window_s": 60},
                             {"weight": 50, "window_s": 60}]
    assert CanarySpec.from_dict(json.loads(json.dumps(data))) == SPEC
    assert CanarySpec.from_dict({}) == CanarySpec()


@pytest.mark.parametrize(("data", "field"), [
    ({"steps": [{"weight": 5}]}, "steps[0]"),
    ({"steps": [{"weight": 5, "window_s": 60, "pause": 1}]}, "steps[0]"),
    ({"steps": []}, "steps"),
    ({"failure_limits": 3}, "failure_limits"),
    ({"steps": [{"weight": 50, "window_s": 60}, {"weight": 5, "window_s": 60}]}, "steps[1].weight"),
])
def test_spec_from_bad_data_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(CanarySpecError) as info:
        CanarySpec.from_dict(data)
    assert info.value.field == field


# --- one step's analysis ------------------------------------------------------------------------------------------

def test_healthy_step_is_promoted_with_every_check_reported() -> None:
    verdict = analyze_step(SPEC, 0, metrics(), metrics(), 0)
    assert verdict.outcome is Outcome.PROMOTE_STEP and not verdict.abort and verdict.failures == 0
    assert verdict.weight == 5
    assert [c.name for c in verdict.checks] == ["canary_requests", "stable_requests", "canary_quality_samples",
                                                "error_rate", "ttft_p95", "quality"]
    assert all(c.passed for c in verdict.checks)


@pytest.mark.parametrize(("canary", "stable", "check"), [
    (metrics(requests=99, errors=0), metrics(), "canary_requests"),
    (metrics(), metrics(requests=50, errors=0), "stable_requests"),
    (metrics(quality_samples=9), metrics(), "canary_quality_samples"),
    (metrics(), metrics(ttft=None), "stable_ttft_p95"),
])
def test_too_little_data_holds_without_counting_a_failure(canary: WindowMetrics, stable: WindowMetrics,
                                                          check: str) -> None:
    verdict = analyze_step(SPEC, 1, canary, stable, 1)
    assert verdict.outcome is Outcome.HOLD
    assert verdict.failures == 1 and not verdict.abort
    assert [c.name for c in verdict.checks if not c.passed] == [check]
    assert all(r.startswith("hold: ") for r in verdict.reasons)


def test_hold_does_not_judge_metrics_it_has_too_little_data_for() -> None:
    # 50% errors on 10 requests: not enough requests to call it a failure.
    verdict = analyze_step(SPEC, 0, metrics(requests=10, errors=5), metrics(), 0)
    assert verdict.outcome is Outcome.HOLD
    assert "error_rate" not in [c.name for c in verdict.checks]
    assert verdict.reasons == ("hold: 10 canary requests in the window, fewer than 100 needed",)


@pytest.mark.parametrize("short", [
    {"quality_samples": 0, "quality": None},  # every canary answer failed: nothing to score
    {"ttft": None},  # nor any TTFT to measure
])
def test_errors_on_enough_requests_fail_even_without_quality_or_latency_evidence(short: dict) -> None:
    verdict = analyze_step(SPEC, 0, metrics(errors=100, **short), metrics(), 1)
    assert verdict.outcome is Outcome.FAIL and verdict.failures == 2 and verdict.abort
    assert [c.name for c in verdict.checks if not c.passed and c.name == "error_rate"] == ["error_rate"]
    assert verdict.reasons[0].startswith("error_rate: canary 10.00% vs stable 1.00% (+9.00 pts), exceeds")
    assert verdict.reasons[-1] == "failure 2/2: failure limit reached, abort and route 0% to the canary"


def test_missing_evidence_without_errors_still_holds() -> None:
    verdict = analyze_step(SPEC, 0, metrics(errors=20, quality_samples=0, quality=None), metrics(), 0)
    assert verdict.outcome is Outcome.HOLD  # +1 pt error rate is within the limit: wait for samples
    assert verdict.reasons == ("hold: 0 canary quality samples in the window, fewer than 10 needed",)


def test_exactly_min_requests_is_enough() -> None:
    assert analyze_step(SPEC, 0, metrics(requests=100, errors=1), metrics(), 0).outcome is Outcome.PROMOTE_STEP


def test_quality_samples_are_not_needed_when_the_quality_check_is_off() -> None:
    spec = CanarySpec(min_quality=None, min_requests=100)
    verdict = analyze_step(spec, 0, metrics(quality_samples=0, quality=None), metrics(), 0)
    assert verdict.outcome is Outcome.PROMOTE_STEP
    assert "quality" not in [c.name for c in verdict.checks]


def test_error_rate_breach_is_named_with_measured_and_threshold() -> None:
    verdict = analyze_step(SPEC, 0, metrics(errors=80), metrics(errors=10), 0)
    assert verdict.outcome is Outcome.FAIL and verdict.failures == 1 and not verdict.abort
    check = next(c for c in verdict.checks if c.name == "error_rate")
    assert (check.measured, check.baseline, check.threshold, check.passed) == (0.08, 0.01, 0.02, False)
    assert verdict.reasons[0] == ("error_rate: canary 8.00% vs stable 1.00% (+7.00 pts), exceeds max increase "
                                  "2.00 pts")
    assert verdict.reasons[-1] == "failure 1/2: observe the step again"


def test_error_rate_increase_exactly_at_threshold_passes() -> None:
    verdict = analyze_step(SPEC, 0, metrics(errors=30), metrics(errors=10), 0)  # +2.00 pts
    assert verdict.outcome is Outcome.PROMOTE_STEP


def test_ttft_breach_is_named() -> None:
    verdict = analyze_step(SPEC, 0, metrics(ttft=300.0), metrics(ttft=200.0), 0)
    assert verdict.outcome is Outcome.FAIL
    assert [c.name for c in verdict.checks if not c.passed] == ["ttft_p95"]
    assert "ttft_p95: canary 300.0 ms vs stable 200.0 ms (1.500x), exceeds max ratio 1.25x" in verdict.reasons


def test_ttft_ratio_exactly_at_threshold_passes() -> None:
    assert analyze_step(SPEC, 0, metrics(ttft=250.0), metrics(ttft=200.0), 0).outcome is Outcome.PROMOTE_STEP


def test_canary_without_any_ttft_fails_the_ttft_check() -> None:
    verdict = analyze_step(SPEC, 0, metrics(ttft=None), metrics(), 0)
    assert verdict.outcome is Outcome.FAIL
    assert "ttft_p95: no successful canary request to measure TTFT on" in verdict.reasons


def test_quality_floor() -> None:
    below = analyze_step(SPEC, 0, metrics(quality=0.69), metrics(), 0)
    assert below.outcome is Outcome.FAIL
    assert [c.name for c in below.checks if not c.passed] == ["quality"]
    assert "quality: canary mean 0.690 over 50 sampled responses, below the floor 0.7" in below.reasons
    assert analyze_step(SPEC, 0, metrics(quality=0.7), metrics(), 0).outcome is Outcome.PROMOTE_STEP


def test_several_breaches_are_all_named() -> None:
    verdict = analyze_step(SPEC, 2, metrics(errors=200, ttft=400.0, quality=0.2), metrics(), 1)
    assert [c.name for c in verdict.checks if not c.passed] == ["error_rate", "ttft_p95", "quality"]
    assert verdict.abort and verdict.failures == 2
    assert verdict.reasons[-1] == "failure 2/2: failure limit reached, abort and route 0% to the canary"


def test_windows_must_match() -> None:
    with pytest.raises(CanaryError, match="different windows: start_s"):
        analyze_step(SPEC, 0, metrics(end_s=100.0), metrics(end_s=160.0), 0)
    # One side without timestamps cannot be checked, and is accepted.
    assert analyze_step(SPEC, 0, metrics(end_s=100.0), metrics(), 0).window_end_s == 100.0


@pytest.mark.parametrize(("step_index", "failures", "match"), [
    (3, 0, "step_index 3"), (-1, 0, "step_index -1"), (0, 2, "already aborted"), (0, -1, "failures_so_far"),
])
def test_analyze_step_refuses_impossible_positions(step_index: int, failures: int, match: str) -> None:
    with pytest.raises(CanaryError, match=match):
        analyze_step(SPEC, step_index, metrics(), metrics(), failures)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"requests": -1, "errors": 0}, "requests"),
    ({"requests": 10, "errors": 11}, "errors"),
    ({"ttft": 0.0}, "ttft_p95_ms"),
    ({"quality_samples": 3, "quality": None}, "quality_mean"),
])
def test_bad_window_metrics_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(CanaryError, match=match):
        metrics(**kwargs)  # type: ignore[arg-type]


# --- the state machine --------------------------------------------------------------------------------------------

def test_promote_path_goes_through_every_step_then_completes() -> None:
    actions, history = run_rollout(SPEC, healthy, seed=1)
    assert [(a.kind, a.weight) for a in actions] == [
        (ActionKind.OBSERVE, 5), (ActionKind.OBSERVE, 25), (ActionKind.OBSERVE, 50), (ActionKind.COMPLETE, 100)]
    assert [a.window_s for a in actions[:3]] == [60, 60, 60]
    assert all(isinstance(v, StepVerdict) and v.outcome is Outcome.PROMOTE_STEP for v in history)
    assert breach_time(history) is None


def test_erroring_canary_is_aborted_to_weight_zero_at_the_failure_limit() -> None:
    actions, history = run_rollout(SPEC, erroring, seed=2)
    assert [(a.kind, a.weight, a.step_index) for a in actions] == [
        (ActionKind.OBSERVE, 5, 0), (ActionKind.OBSERVE, 5, 0), (ActionKind.ABORT, 0, None)]
    assert [v.failures for v in history if isinstance(v, StepVerdict)] == [1, 2]
    assert any(r.startswith("error_rate: ") for r in actions[-1].reasons)


def test_single_failure_below_the_limit_reobserves_the_same_step_and_continues() -> None:
    spec = CanarySpec(steps=SPEC.steps, failure_limit=3, min_requests=100, min_quality_samples=10)
    first = analyze_step(spec, 0, metrics(errors=100), metrics(), 0)
    assert first.outcome is Outcome.FAIL and not first.abort
    again = next_action(spec, [first])
    assert (again.kind, again.weight, again.step_index, again.failures_so_far) == (ActionKind.OBSERVE, 5, 0, 1)
    second = analyze_step(spec, 0, metrics(), metrics(), again.failures_so_far)
    assert second.outcome is Outcome.PROMOTE_STEP and second.failures == 1
    step2 = next_action(spec, [first, second])
    assert (step2.kind, step2.weight, step2.failures_so_far) == (ActionKind.OBSERVE, 25, 1)


def test_failures_count_over_the_whole_rollout() -> None:
    # One failure at 5% and one at 25% reach a limit of 2: the counter is not reset by a promotion.
    fail_0 = analyze_step(SPEC, 0, metrics(ttft=900.0), metrics(), 0)
    pass_0 = analyze_step(SPEC, 0, metrics(), metrics(), 1)
    fail_1 = analyze_step(SPEC, 1, metrics(ttft=900.0), metrics(), 1)
    assert fail_1.abort
    action = next_action(SPEC, [fail_0, pass_0, fail_1])
    assert (action.kind, action.weight) == (ActionKind.ABORT, 0)


def test_failure_limit_of_one_aborts_on_the_first_breach() -> None:
    spec = CanarySpec(failure_limit=1, min_requests=100, min_quality_samples=10)
    verdict = analyze_step(spec, 0, metrics(errors=500), metrics(), 0)
    assert verdict.abort
    assert next_action(spec, [verdict]).kind is ActionKind.ABORT


def test_hold_reobserves_then_aborts_after_max_holds() -> None:
    thin = analyze_step(SPEC, 0, metrics(requests=20, errors=0), metrics(), 0)
    assert next_action(SPEC, [thin]).kind is ActionKind.OBSERVE
    assert next_action(SPEC, [thin, thin]).step_index == 0
    action = next_action(SPEC, [thin, thin, thin])
    assert (action.kind, action.weight) == (ActionKind.ABORT, 0)
    assert "held 3 windows in a row" in action.reasons[0]


def test_holds_reset_when_a_window_decides() -> None:
    thin = analyze_step(SPEC, 0, metrics(requests=20, errors=0), metrics(), 0)
    ok = analyze_step(SPEC, 0, metrics(), metrics(), 0)
    thin_1 = analyze_step(SPEC, 1, metrics(requests=20, errors=0), metrics(), 0)
    assert next_action(SPEC, [thin, thin, ok, thin_1, thin_1]).kind is ActionKind.OBSERVE


def test_approval_is_awaited_before_the_last_step() -> None:
    spec = CanarySpec(steps=SPEC.steps, require_approval=True, min_requests=100, min_quality_samples=10)
    ok_0 = analyze_step(spec, 0, metrics(), metrics(), 0)
    ok_1 = analyze_step(spec, 1, metrics(), metrics(), 0)
    waiting = next_action(spec, [ok_0, ok_1])
    assert (waiting.kind, waiting.weight, waiting.step_index) == (ActionKind.AWAIT_APPROVAL, 25, 2)
    go = next_action(spec, [ok_0, ok_1, Approval("ops")])
    assert (go.kind, go.weight) == (ActionKind.OBSERVE, 50)
    actions, _ = run_rollout(spec, healthy, seed=3)
    assert [a.kind for a in actions] == [ActionKind.OBSERVE, ActionKind.OBSERVE, ActionKind.AWAIT_APPROVAL,
                                         ActionKind.OBSERVE, ActionKind.COMPLETE]


def test_without_approval_the_rollout_stays_waiting_at_the_current_weight() -> None:
    spec = CanarySpec(steps=SPEC.steps, require_approval=True, min_requests=100, min_quality_samples=10)
    actions, _ = run_rollout(spec, healthy, seed=3, approve=False)
    assert (actions[-1].kind, actions[-1].weight) == (ActionKind.AWAIT_APPROVAL, 25)


def test_single_step_rollout_with_approval_waits_at_weight_zero() -> None:
    spec = CanarySpec(steps=(CanaryStep(10, 30),), require_approval=True)
    assert (next_action(spec, []).kind, next_action(spec, []).weight) == (ActionKind.AWAIT_APPROVAL, 0)


@pytest.mark.parametrize("build", [
    lambda ok, fail: [ok, dataclasses.replace(ok, step_index=2)],    # skipped a step
    lambda ok, fail: [fail, dataclasses.replace(fail, failures=1)],  # failure count not increased
    lambda ok, fail: [fail, dataclasses.replace(fail, failures=2, abort=True), ok],  # entry after abort
    lambda ok, fail: [ok, dataclasses.replace(ok, step_index=1), dataclasses.replace(ok, step_index=2),
                      dataclasses.replace(ok, step_index=2)],  # verdict after completion
])
def test_inconsistent_history_is_refused(build: Callable[[StepVerdict, StepVerdict], list[StepVerdict]]) -> None:
    ok = analyze_step(SPEC, 0, metrics(), metrics(), 0)
    fail = analyze_step(SPEC, 0, metrics(errors=500), metrics(), 0)
    with pytest.raises(CanaryError, match=r"history\[\d\]"):
        next_action(SPEC, build(ok, fail))


# --- breach to rollback ------------------------------------------------------------------------------------------

def test_breach_to_rollback_seconds() -> None:
    assert breach_to_rollback_s(1_000.0, 1_002.5) == 2.5
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    assert breach_to_rollback_s(t0, t0 + timedelta(milliseconds=1500)) == 1.5
    assert breach_to_rollback_s(5.0, 5.0) == 0.0


@pytest.mark.parametrize(("breach", "rollback", "match"), [
    (10.0, 9.0, "before breach_at"),
    (datetime(2025, 1, 1, tzinfo=UTC), 9.0, "both be datetimes"),
    (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1), "timezone-aware"),
])
def test_breach_to_rollback_refuses_bad_timestamps(breach: object, rollback: object, match: str) -> None:
    with pytest.raises(CanaryError, match=match):
        breach_to_rollback_s(breach, rollback)  # type: ignore[arg-type]


def test_breach_time_is_the_end_of_the_first_failing_window() -> None:
    _, history = run_rollout(SPEC, erroring, seed=4)
    verdicts = [v for v in history if isinstance(v, StepVerdict)]
    assert breach_time(history) == verdicts[0].window_end_s == 1_060.0
    assert breach_to_rollback_s(breach_time(history), 1_120.4) == pytest.approx(60.4)


# --- verdicts and actions as data ------------------------------------------------------------------------------------

def test_verdict_and_history_round_trip_through_json() -> None:
    _, history = run_rollout(CanarySpec(steps=SPEC.steps, require_approval=True, min_requests=100,
                                        min_quality_samples=10), healthy, seed=5)
    data = json.loads(json.dumps([entry.to_dict() for entry in history], allow_nan=False))
    assert data[0]["kind"] == "step_verdict" and data[0]["outcome"] == "promote_step"
    assert data[2]["kind"] == "approval"
    assert load_history(data) == history


def test_load_history_refuses_unknown_entries() -> None:
    with pytest.raises(CanaryError, match=r"history\[0\]: kind 'pause'"):
        load_history([{"kind": "pause"}])


def test_action_to_dict() -> None:
    first = analyze_step(SPEC, 0, metrics(errors=500), metrics(), 0)
    action = next_action(SPEC, [first, analyze_step(SPEC, 0, metrics(errors=500), metrics(), first.failures)])
    assert json.loads(json.dumps(action.to_dict())) == {
        "kind": "abort", "weight": 0, "step_index": None, "window_s": None, "failures_so_far": 2,
        "reasons": list(action.reasons)}


def test_markdown_names_the_checks_and_the_abort() -> None:
    verdict = analyze_step(SPEC, 1, metrics(errors=200), metrics(), 1)
    text = verdict.to_markdown()
    assert text.startswith("## Canary step 2 (25%): fail -> ABORT (weight 0)")
    assert "Failures: 2/2." in text
    assert "| error_rate | 0.2000 | 0.0100 | 0.02 | **FAIL** |" in text
    assert "| ttft_p95 | 200 | 200 | 1.25 | pass |" in text
    assert "- error_rate: canary 20.00% vs stable 1.00%" in text
