"""Canary analysis and its state machine, as pure functions (after Argo Rollouts and Flagger).

A :class:`CanarySpec` is data: steps of traffic weight and observation window, a failure
limit and the analysis thresholds. The I/O side (HTTPRoute patcher or nginx weights, metric
queries) only executes :class:`Action`\\ s::

    history = []
    while (action := next_action(spec, history)).kind == "observe":
        route(action.weight); wait(action.window_s)           # I/O
        canary, stable = measure(window)                       # I/O
        history.append(analyze_step(spec, action.step_index, canary, stable, action.failures_so_far))
    # "abort": route 0% to the canary; "complete": route 100%;
    # "await_approval": wait for the UI approval, append Approval(), loop again.

Decision rules of one step (``analyze_step``), canary and stable measured over the same window:

* **hold** (not enough data, nothing counted) when either side has fewer than
  ``min_requests`` requests, the stable side has no TTFT p95, or the quality floor is set and
  the canary has fewer than ``min_quality_samples`` quality samples.
* otherwise **fail** when any check breaches (``EPS`` lets a value exactly at its threshold pass):
  ``canary_error_rate - stable_error_rate > max_error_rate_increase`` (``error_rate``);
  ``canary_ttft_p95 / stable_ttft_p95 > max_ttft_p95_ratio``, or the canary has no TTFT
  (``ttft_p95``); ``canary_quality_mean < min_quality`` (``quality``).
* otherwise **promote_step**.

A fail adds one to the failure count, which runs over the whole rollout (as Flagger's failed
checks); ``abort`` is set when it reaches ``failure_limit``. Below the limit the same step is
observed again. ``max_holds`` consecutive holds on one step abort the rollout: a canary is
never promoted without evidence. Abort routes 0% to the canary at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

EPS = 1e-9
"""Tolerance of threshold comparisons, so a value exactly at a threshold passes."""


class CanarySpecError(ValueError):
    """A canary spec that cannot be used; ``field`` names the first bad field."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        self.field = problems[0][0]
        lines = [f"{name}: {problem}" for name, problem in problems]
        message = lines[0] if len(lines) == 1 else f"{len(lines)} problems: " + "; ".join(lines)
        super().__init__(f"canary spec {message}")


class CanaryError(ValueError):
    """Inputs the analysis refuses (different windows, an inconsistent history, bad metrics)."""


class Outcome(StrEnum):
    """What one step's analysis decided."""

    PROMOTE_STEP = "promote_step"
    HOLD = "hold"
    FAIL = "fail"


class ActionKind(StrEnum):
    """What the I/O side must do next."""

    OBSERVE = "observe"  # route `weight`% to the canary, wait `window_s`, measure, analyze_step
    AWAIT_APPROVAL = "await_approval"  # keep the current weight until approved in the UI
    ABORT = "abort"  # route 0% to the canary (automatic rollback)
    COMPLETE = "complete"  # route 100% to the canary (then promote)


@dataclass(frozen=True)
class CanaryStep:
    """One step: the canary's share of traffic (percent) and how long to observe it."""

    weight: int
    window_s: float


DEFAULT_STEPS = (CanaryStep(5, 300.0), CanaryStep(25, 300.0), CanaryStep(50, 300.0))


@dataclass(frozen=True)
class CanarySpec:
    """Steps, failure limit and analysis thresholds of a canary rollout, validated at construction.

    ``max_error_rate_increase`` is absolute (0.01 = one percentage point over stable);
    ``max_ttft_p95_ratio`` is canary / stable; ``min_quality`` is the floor of the mean quality
    score of sampled canary responses (``None`` disables the quality check).
    """

    steps: tuple[CanaryStep, ...] = DEFAULT_STEPS
    failure_limit: int = 2
    max_error_rate_increase: float = 0.01
    max_ttft_p95_ratio: float = 1.2
    min_quality: float | None = 0.5
    min_requests: int = 50
    min_quality_samples: int = 5
    max_holds: int = 3
    require_approval: bool = False

    def __post_init__(self) -> None:
        problems = _step_problems(self.steps) + _threshold_problems(self)
        if problems:
            raise CanarySpecError(problems)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanarySpec:
        """Build from plain data (Airflow Params, JSON): ``steps`` is a list of {weight, window_s}."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CanarySpecError([(name, f"unknown field; use one of {sorted(known)}") for name in unknown])
        values = dict(data)
        if "steps" in values:
            values["steps"] = _steps_from_data(values["steps"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (round-trips through :meth:`from_dict`)."""
        data = asdict(self)
        data["steps"] = [asdict(step) for step in self.steps]
        return data


@dataclass(frozen=True)
class WindowMetrics:
    """One side's (canary or stable) measurements over an observation window.

    ``start_s``/``end_s`` (epoch seconds) are optional; when both sides give them they must agree.
    """

    requests: int
    errors: int
    ttft_p95_ms: float | None
    quality_samples: int = 0
    quality_mean: float | None = None
    start_s: float | None = None
    end_s: float | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.requests) or self.requests < 0:
            raise CanaryError(f"WindowMetrics.requests: {self.requests!r} is not a count >= 0")
        if not _is_int(self.errors) or not 0 <= self.errors <= self.requests:
            raise CanaryError(f"WindowMetrics.errors: {self.errors!r} is not a count in [0, requests]")
        if self.ttft_p95_ms is not None and not _positive(self.ttft_p95_ms):
            raise CanaryError(f"WindowMetrics.ttft_p95_ms: {self.ttft_p95_ms!r} is not a positive number")
        if not _is_int(self.quality_samples) or self.quality_samples < 0:
            raise CanaryError(f"WindowMetrics.quality_samples: {self.quality_samples!r} is not a count >= 0")
        if self.quality_samples and (self.quality_mean is None or not math.isfinite(self.quality_mean)):
            raise CanaryError("WindowMetrics.quality_mean: must be a finite number when quality_samples > 0")

    @property
    def error_rate(self) -> float:
        """Errors per request (0 when there were no requests)."""
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Check:
    """One analysis check: what was measured against what threshold."""

    name: str
    measured: float | None
    baseline: float | None
    threshold: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class StepVerdict:
    """The analysis of one observation window of one step."""

    step_index: int
    weight: int
    outcome: Outcome
    checks: tuple[Check, ...]
    reasons: tuple[str, ...]
    failures: int
    failure_limit: int
    abort: bool
    window_end_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (for ``mlflow.log_dict`` and XCom)."""
        data = {"kind": "step_verdict", **asdict(self)}
        data["outcome"] = self.outcome.value
        data["checks"] = [asdict(check) for check in self.checks]
        data["reasons"] = list(self.reasons)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepVerdict:
        """Rebuild from :meth:`to_dict` output (verdicts travel between tasks through XCom)."""
        values = {k: v for k, v in data.items() if k != "kind"}
        values["outcome"] = Outcome(values["outcome"])
        values["checks"] = tuple(Check(**check) for check in values["checks"])
        values["reasons"] = tuple(values["reasons"])
        return cls(**values)

    def to_markdown(self) -> str:
        """A readable report of the step (for ``mlflow.log_text`` and the Airflow UI)."""
        title = f"## Canary step {self.step_index + 1} ({self.weight}%): {self.outcome.value}"
        if self.abort:
            title += " -> ABORT (weight 0)"
        lines = [title, "", f"Failures: {self.failures}/{self.failure_limit}.", "",
                 "| check | canary | stable | threshold | result |", "|---|---:|---:|---:|---|"]
        for c in self.checks:
            lines.append(f"| {c.name} | {_num(c.measured)} | {_num(c.baseline)} | {c.threshold:g} | "
                         f"{'pass' if c.passed else '**FAIL**'} |")
        lines += ["", "**Reasons**", ""] + [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Approval:
    """A history entry: the approval to run the last step was given (by whom, when)."""

    approved_by: str = ""
    at_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (for XCom)."""
        return {"kind": "approval", **asdict(self)}


@dataclass(frozen=True)
class Action:
    """What the I/O side does next; ``weight`` is the canary's traffic share to route (percent)."""

    kind: ActionKind
    weight: int
    step_index: int | None = None
    window_s: float | None = None
    failures_so_far: int = 0
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (for XCom and the task log)."""
        data = asdict(self)
        data["kind"] = self.kind.value
        data["reasons"] = list(self.reasons)
        return data


def analyze_step(spec: CanarySpec, step_index: int, canary: WindowMetrics, stable: WindowMetrics,
                 failures_so_far: int) -> StepVerdict:
    """Compare canary with stable over one window of step ``step_index`` (rules in the module doc)."""
    if not 0 <= step_index < len(spec.steps):
        raise CanaryError(f"step_index {step_index} is not in [0, {len(spec.steps)})")
    if not 0 <= failures_so_far < spec.failure_limit:
        raise CanaryError(f"failures_so_far {failures_so_far} is not in [0, failure_limit {spec.failure_limit}); "
                          "a rollout at its failure limit is already aborted")
    _check_same_window(canary, stable)
    weight = spec.steps[step_index].weight
    sample_checks = _sample_checks(spec, canary, stable)
    volume_ok = all(c.passed for c in sample_checks if c.name in VOLUME_CHECKS)
    if all(c.passed for c in sample_checks):
        analysis = _analysis_checks(spec, canary, stable)
    else:
        # Missing latency or quality evidence holds the step, unless enough requests were seen
        # and the canary's error rate already breaches: errors are evidence enough to fail.
        error_rate = _error_rate_check(spec, canary, stable)
        analysis = [] if not volume_ok or error_rate.passed else [error_rate]
    if not analysis:
        reasons = tuple(f"hold: {c.detail}" for c in sample_checks if not c.passed)
        return StepVerdict(step_index, weight, Outcome.HOLD, tuple(sample_checks), reasons, failures_so_far,
                           spec.failure_limit, abort=False, window_end_s=canary.end_s)
    checks = sample_checks + analysis
    breaches = [c for c in analysis if not c.passed]
    if not breaches:
        return StepVerdict(step_index, weight, Outcome.PROMOTE_STEP, tuple(checks),
                           (f"step {step_index + 1} ({weight}%) passed all checks",), failures_so_far,
                           spec.failure_limit, abort=False, window_end_s=canary.end_s)
    failures = failures_so_far + 1
    abort = failures >= spec.failure_limit
    reasons = [c.detail for c in breaches]
    reasons.append(f"failure {failures}/{spec.failure_limit}: " + (
        "failure limit reached, abort and route 0% to the canary" if abort else "observe the step again"))
    return StepVerdict(step_index, weight, Outcome.FAIL, tuple(checks), tuple(reasons), failures,
                       spec.failure_limit, abort=abort, window_end_s=canary.end_s)


def next_action(spec: CanarySpec, history: Sequence[StepVerdict | Approval]) -> Action:
    """The next action given the verdicts (and approvals) so far; raises on an inconsistent history."""
    state = _replay(spec, history)
    if state.abort_reasons:
        return Action(ActionKind.ABORT, weight=0, failures_so_far=state.failures, reasons=state.abort_reasons)
    if state.step == len(spec.steps):
        return Action(ActionKind.COMPLETE, weight=100, failures_so_far=state.failures,
                      reasons=(f"all {len(spec.steps)} steps passed",))
    current_weight = spec.steps[state.step - 1].weight if state.step else 0
    if spec.require_approval and state.step == len(spec.steps) - 1 and not state.approved:
        return Action(ActionKind.AWAIT_APPROVAL, weight=current_weight, step_index=state.step,
                      failures_so_far=state.failures, reasons=("approval required before the last step",))
    step = spec.steps[state.step]
    return Action(ActionKind.OBSERVE, weight=step.weight, step_index=state.step, window_s=step.window_s,
                  failures_so_far=state.failures)


def load_history(data: Sequence[Mapping[str, Any]]) -> list[StepVerdict | Approval]:
    """Rebuild a history from the ``to_dict()`` outputs of its verdicts and approvals."""
    history: list[StepVerdict | Approval] = []
    for position, entry in enumerate(data):
        kind = entry.get("kind")
        if kind == "step_verdict":
            history.append(StepVerdict.from_dict(entry))
        elif kind == "approval":
            history.append(Approval(**{k: v for k, v in entry.items() if k != "kind"}))
        else:
            raise CanaryError(f"history[{position}]: kind {kind!r} is neither 'step_verdict' nor 'approval'")
    return history


def breach_time(history: Sequence[StepVerdict | Approval]) -> float | None:
    """End of the first window whose analysis failed (when exposure to a breach was measured), if any."""
    return next((v.window_end_s for v in history if isinstance(v, StepVerdict) and v.outcome is Outcome.FAIL),
                None)


def breach_to_rollback_s(breach_at: float | datetime, rollback_at: float | datetime) -> float:
    """Seconds from a breach to the canary's weight reaching 0 (epoch seconds or aware datetimes)."""
    if isinstance(breach_at, datetime) != isinstance(rollback_at, datetime):
        raise CanaryError("breach_at and rollback_at must both be datetimes or both epoch seconds")
    if isinstance(breach_at, datetime) and isinstance(rollback_at, datetime):
        if (breach_at.tzinfo is None) != (rollback_at.tzinfo is None):
            raise CanaryError("breach_at and rollback_at must both be timezone-aware or both naive")
        seconds = (rollback_at - breach_at).total_seconds()
    else:
        seconds = float(rollback_at) - float(breach_at)
    if seconds < 0:
        raise CanaryError(f"rollback_at is {-seconds:.3f} s before breach_at")
    return seconds


@dataclass
class _State:
    step: int = 0
    failures: int = 0
    holds: int = 0
    approved: bool = False
    abort_reasons: tuple[str, ...] = ()


def _replay(spec: CanarySpec, history: Sequence[StepVerdict | Approval]) -> _State:
    """Walk the history, checking that each verdict is for the step the machine was on."""
    state = _State()
    for position, entry in enumerate(history):
        if state.abort_reasons:
            raise CanaryError(f"history[{position}]: entry after the rollout was aborted")
        if isinstance(entry, Approval):
            state.approved = True
            continue
        if state.step == len(spec.steps):
            raise CanaryError(f"history[{position}]: verdict after all steps completed")
        if entry.step_index != state.step:
            raise CanaryError(f"history[{position}]: verdict for step {entry.step_index}, expected step {state.step}")
        expected = state.failures + (1 if entry.outcome is Outcome.FAIL else 0)
        if entry.failures != expected:
            raise CanaryError(f"history[{position}]: failures {entry.failures}, expected {expected}")
        _advance(spec, state, entry)
    return state


def _advance(spec: CanarySpec, state: _State, verdict: StepVerdict) -> None:
    state.failures = verdict.failures
    if verdict.outcome is Outcome.PROMOTE_STEP:
        state.step, state.holds = state.step + 1, 0
    elif verdict.outcome is Outcome.FAIL:
        state.holds = 0
        if verdict.abort or verdict.failures >= spec.failure_limit:
            state.abort_reasons = verdict.reasons
    else:
        state.holds += 1
        if state.holds >= spec.max_holds:
            state.abort_reasons = (f"step {state.step + 1} held {state.holds} windows in a row without enough "
                                   "data to decide (max_holds); abort rather than promote without evidence",
                                   *verdict.reasons)


VOLUME_CHECKS = frozenset({"canary_requests", "stable_requests"})


def _sample_checks(spec: CanarySpec, canary: WindowMetrics, stable: WindowMetrics) -> list[Check]:
    """Is there enough data to decide? (A failed one means hold, not fail.)"""
    checks = [
        _minimum("canary_requests", canary.requests, spec.min_requests, "canary requests"),
        _minimum("stable_requests", stable.requests, spec.min_requests, "stable requests"),
    ]
    if stable.ttft_p95_ms is None:
        checks.append(Check("stable_ttft_p95", measured=None, baseline=None, threshold=0, passed=False,
                            detail="the stable side has no TTFT p95 to compare with"))
    if spec.min_quality is not None:
        checks.append(_minimum("canary_quality_samples", canary.quality_samples, spec.min_quality_samples,
                               "canary quality samples"))
    return checks


def _minimum(name: str, measured: int, needed: int, what: str) -> Check:
    passed = measured >= needed
    detail = f"{measured} {what} in the window, {'at least' if passed else 'fewer than'} {needed} needed"
    return Check(name, measured, None, needed, passed, detail)


def _analysis_checks(spec: CanarySpec, canary: WindowMetrics, stable: WindowMetrics) -> list[Check]:
    checks = [_error_rate_check(spec, canary, stable), _ttft_check(spec, canary, stable)]
    if spec.min_quality is not None:
        checks.append(_quality_check(spec.min_quality, canary))
    return checks


def _error_rate_check(spec: CanarySpec, canary: WindowMetrics, stable: WindowMetrics) -> Check:
    increase = canary.error_rate - stable.error_rate
    passed = increase <= spec.max_error_rate_increase + EPS
    relation = "within" if passed else "exceeds"
    detail = (f"error_rate: canary {canary.error_rate:.2%} vs stable {stable.error_rate:.2%} "
              f"({increase * 100:+.2f} pts), {relation} max increase {spec.max_error_rate_increase * 100:.2f} pts")
    return Check("error_rate", canary.error_rate, stable.error_rate, spec.max_error_rate_increase, passed, detail)


def _ttft_check(spec: CanarySpec, canary: WindowMetrics, stable: WindowMetrics) -> Check:
    if canary.ttft_p95_ms is None:
        return Check("ttft_p95", None, stable.ttft_p95_ms, spec.max_ttft_p95_ratio, False,
                     "ttft_p95: no successful canary request to measure TTFT on")
    assert stable.ttft_p95_ms is not None  # a missing stable TTFT holds before this check
    ratio = canary.ttft_p95_ms / stable.ttft_p95_ms
    passed = ratio <= spec.max_ttft_p95_ratio + EPS
    relation = "within" if passed else "exceeds"
    detail = (f"ttft_p95: canary {canary.ttft_p95_ms:.1f} ms vs stable {stable.ttft_p95_ms:.1f} ms "
              f"({ratio:.3f}x), {relation} max ratio {spec.max_ttft_p95_ratio:g}x")
    return Check("ttft_p95", canary.ttft_p95_ms, stable.ttft_p95_ms, spec.max_ttft_p95_ratio, passed, detail)


def _quality_check(min_quality: float, canary: WindowMetrics) -> Check:
    quality = canary.quality_mean
    assert quality is not None  # enough quality samples were checked before this
    passed = quality >= min_quality - EPS
    relation = "at or above" if passed else "below"
    detail = (f"quality: canary mean {quality:.3f} over {canary.quality_samples} sampled responses, "
              f"{relation} the floor {min_quality:g}")
    return Check("quality", quality, None, min_quality, passed, detail)


def _check_same_window(canary: WindowMetrics, stable: WindowMetrics) -> None:
    for name in ("start_s", "end_s"):
        a, b = getattr(canary, name), getattr(stable, name)
        if a is not None and b is not None and a != b:
            raise CanaryError(f"canary and stable were measured over different windows: {name} {a} vs {b}")


def _step_problems(steps: Any) -> list[tuple[str, str]]:
    if not isinstance(steps, tuple) or not steps:
        return [("steps", "must be a non-empty tuple of CanaryStep")]
    problems: list[tuple[str, str]] = []
    previous = 0
    for i, step in enumerate(steps):
        if not isinstance(step, CanaryStep):
            problems.append((f"steps[{i}]", f"{step!r} is not a CanaryStep"))
            continue
        if not _is_int(step.weight) or not 0 < step.weight <= 100:
            problems.append((f"steps[{i}].weight", f"{step.weight!r} is not an integer percent in (0, 100]"))
        elif step.weight <= previous:
            problems.append((f"steps[{i}].weight", f"{step.weight} is not greater than the previous step's "
                                                   f"{previous}; weights must increase strictly"))
        else:
            previous = step.weight
        if not _positive(step.window_s):
            problems.append((f"steps[{i}].window_s", f"{step.window_s!r} is not a positive number of seconds"))
    return problems


def _threshold_problems(spec: CanarySpec) -> list[tuple[str, str]]:
    problems = []
    for name in ("failure_limit", "min_requests", "min_quality_samples", "max_holds"):
        value = getattr(spec, name)
        if not _is_int(value) or value < 1:
            problems.append((name, f"{value!r} is not an integer >= 1"))
    rate = spec.max_error_rate_increase
    if not _number(rate) or not 0 <= rate <= 1:
        problems.append(("max_error_rate_increase", f"{rate!r} is not a fraction in [0, 1]"))
    ratio = spec.max_ttft_p95_ratio
    if not _number(ratio) or ratio < 1:
        problems.append(("max_ttft_p95_ratio", f"{ratio!r} is not a ratio >= 1"))
    quality = spec.min_quality
    if quality is not None and (not _number(quality) or not 0 <= quality <= 1):
        problems.append(("min_quality", f"{quality!r} is not a score in [0, 1] (or null to disable)"))
    if not isinstance(spec.require_approval, bool):
        problems.append(("require_approval", f"{spec.require_approval!r} is not a boolean"))
    return problems


def _steps_from_data(raw: Any) -> tuple[CanaryStep, ...]:
    if not isinstance(raw, (list, tuple)) or not raw:
        raise CanarySpecError([("steps", "must be a non-empty list of {weight, window_s}")])
    steps = []
    for i, item in enumerate(raw):
        if isinstance(item, CanaryStep):
            steps.append(item)
            continue
        if not isinstance(item, Mapping) or set(item) != {"weight", "window_s"}:
            raise CanarySpecError([(f"steps[{i}]", f"{item!r} must be a mapping with exactly weight and window_s")])
        steps.append(CanaryStep(weight=item["weight"], window_s=item["window_s"]))
    return tuple(steps)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if float(value).is_integer() else f"{value:.4f}"
