"""Regression detection against a hardware class's own rolling baseline (pure).

Every (hardware class, served model, workload) has its own history of benchmark runs.
The current run is compared, metric by metric, with:

* **baseline**: the median of the last ``window`` successful runs with the same hardware
  config hash and the same workload definition (a median, so one bad night does not move it);
* **noise**: the robust spread of those runs, 1.4826 x the median absolute deviation of their
  values relative to the baseline (the MAD-based estimate of a standard deviation, which one
  outlier night does not inflate the way a standard deviation would);
* **tolerance**: ``max(threshold, noise_k x noise)``: never tighter than the policy's
  threshold, wider on a class whose night-to-night noise is larger (a shared CPU).

A throughput metric regresses when it drops by more than the tolerance; a latency metric
when it rises by more than the tolerance. With fewer than ``min_history`` matching runs the
verdict is ``insufficient_history`` (reported, never a regression); when earlier runs exist
but none on this config hash (or workload definition) it is ``new_baseline``. The runtime
(vLLM version, image digest) is *not* part of the baseline key of an unpinned run (the default
checkpoint on the platform's image): a runtime or driver upgrade on an unchanged config is
exactly what this check exists to catch, so such a change is named in the verdict's reasons
instead of resetting the baseline. A registered version's run is ``runtime_pinned``: its
runtime changes only when ``runtime_requalify`` qualified the new one and moved the pin, a
deliberate change that starts a new baseline on that runtime; the verdict still reports the
ratios to the previous runtime's baseline, so a slower runtime is visible the night it lands.

No I/O: callers fetch the history (MLflow) and act on the verdict.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llmops.benchmarks.metrics import BY_NAME, GATED, Direction

MAD_TO_SIGMA = 1.4826
"""Scales the median absolute deviation to a standard deviation for normally distributed noise."""

Status = Literal["ok", "regression", "new_baseline", "insufficient_history"]
MetricStatus = Literal["ok", "regression", "improvement", "missing"]


class PolicyError(ValueError):
    """A regression policy that cannot be applied; the message names the field and the fix."""


@dataclass(frozen=True)
class Policy:
    """How a class's runs are judged. Loaded per class from its workload matrix file."""

    window: int = 7
    min_history: int = 3
    throughput_threshold: float = 0.05
    latency_threshold: float = 0.10
    noise_k: float = 3.0
    metrics: tuple[str, ...] = GATED

    def __post_init__(self) -> None:
        problems = []
        if self.window < 1:
            problems.append(f"window {self.window}: must be at least 1")
        if not 1 <= self.min_history <= self.window:
            problems.append(f"min_history {self.min_history}: must be between 1 and window ({self.window})")
        for name in ("throughput_threshold", "latency_threshold", "noise_k"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                problems.append(f"{name} {value!r}: must be a finite number >= 0")
        unknown = [m for m in self.metrics if m not in BY_NAME]
        if unknown:
            problems.append(f"metrics {unknown}: unknown; use names from llmops.benchmarks.metrics")
        if problems:
            raise PolicyError("; ".join(problems))

    def threshold(self, metric: str) -> float:
        """The smallest relative change of ``metric`` that counts, before noise widens it."""
        return self.throughput_threshold if BY_NAME[metric].direction == "higher_is_better" \
            else self.latency_threshold

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Policy:
        """A policy from a mapping (unknown keys are an error naming them)."""
        data = dict(data or {})
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise PolicyError(f"unknown regression policy keys {unknown}; allowed: {sorted(allowed)}")
        if "metrics" in data:
            data["metrics"] = tuple(data["metrics"])
        return cls(**data)


@dataclass(frozen=True)
class Sample:
    """One benchmark run of a (class, model, workload): what it ran on and what it measured."""

    run_id: str
    started_at: float
    config_hash: str
    workload_hash: str
    runtime: str
    metrics: Mapping[str, float]
    runtime_pinned: bool = False


@dataclass(frozen=True)
class MetricComparison:
    """One metric of the current run against its baseline."""

    metric: str
    direction: Direction
    current: float | None
    baseline: float | None
    change: float | None
    noise: float | None
    tolerance: float | None
    status: MetricStatus

    @property
    def ratio(self) -> float | None:
        """current / baseline (vLLM's nightly tables show this), None when either is missing."""
        return None if self.change is None else 1.0 + self.change


@dataclass(frozen=True)
class Verdict:
    """The verdict on one (class, model, workload) run, with its reasons."""

    status: Status
    comparisons: tuple[MetricComparison, ...] = ()
    baseline_runs: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    runtime_change: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def regressions(self) -> tuple[MetricComparison, ...]:
        """The metrics that regressed beyond their tolerance."""
        return tuple(c for c in self.comparisons if c.status == "regression")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (logged to MLflow, returned as XCom)."""
        return {
            "status": self.status,
            "reasons": list(self.reasons),
            "baseline_runs": list(self.baseline_runs),
            "runtime_change": self.runtime_change,
            "comparisons": [{"metric": c.metric, "direction": c.direction, "current": c.current,
                             "baseline": c.baseline, "ratio": c.ratio, "change": c.change, "noise": c.noise,
                             "tolerance": c.tolerance, "status": c.status} for c in self.comparisons],
        }


def robust_noise(values: Sequence[float], center: float) -> float:
    """Relative night-to-night noise: 1.4826 x MAD of ``values / center - 1`` (0 for one value)."""
    if center == 0 or len(values) < 2:
        return 0.0
    relative = [v / center - 1.0 for v in values]
    mid = statistics.median(relative)
    return MAD_TO_SIGMA * statistics.median(abs(r - mid) for r in relative)


def baseline_history(current: Sample, history: Sequence[Sample], window: int) -> list[Sample]:
    """The runs the baseline is built from: same config hash and workload definition, newest first, at most ``window``.

    Runs at or after the current one are ignored (a history query may return the run itself).
    """
    earlier = [s for s in history if s.run_id != current.run_id and s.started_at < current.started_at]
    matching = [s for s in earlier if s.config_hash == current.config_hash
                and s.workload_hash == current.workload_hash
                and (not current.runtime_pinned or s.runtime == current.runtime)]
    matching.sort(key=lambda s: s.started_at, reverse=True)
    return matching[:window]


def compare_metric(metric: str, current: float | None, baseline_values: Sequence[float],
                   policy: Policy) -> MetricComparison:
    """Judge one metric against the values of the baseline runs (see the module docstring)."""
    spec_direction = BY_NAME[metric].direction
    values = [v for v in baseline_values if v is not None and math.isfinite(v)]
    if current is None or not math.isfinite(current) or not values:
        return MetricComparison(metric, spec_direction, current, None, None, None, None, "missing")
    baseline = statistics.median(values)
    if baseline == 0:
        # A ratio to zero means nothing (e.g. goodput 0 every night: no request ever met the SLO).
        return MetricComparison(metric, spec_direction, current, baseline, None, None, None, "missing")
    noise = robust_noise(values, baseline)
    tolerance = max(policy.threshold(metric), policy.noise_k * noise)
    change = current / baseline - 1.0
    worse = -change if spec_direction == "higher_is_better" else change
    if worse > tolerance:
        status: MetricStatus = "regression"
    elif -worse > tolerance:
        status = "improvement"
    else:
        status = "ok"
    return MetricComparison(metric, spec_direction, current, baseline, change, noise, tolerance, status)


def judge(current: Sample, history: Sequence[Sample], policy: Policy) -> Verdict:
    """The verdict on ``current`` given every earlier run of the same (class, model, workload)."""
    earlier = sorted((s for s in history if s.run_id != current.run_id and s.started_at < current.started_at),
                     key=lambda s: s.started_at, reverse=True)
    used = baseline_history(current, earlier, policy.window)
    if not used and earlier:
        latest = earlier[0]
        reasons = []
        if latest.config_hash != current.config_hash:
            reasons.append(f"hardware config changed ({_short(latest.config_hash)} -> {_short(current.config_hash)}): "
                           f"new baseline, {len(earlier)} earlier run(s) on other configs not compared")
        if latest.workload_hash != current.workload_hash:
            reasons.append(f"workload definition changed ({_short(latest.workload_hash)} -> "
                           f"{_short(current.workload_hash)}): new baseline")
        if current.runtime_pinned and latest.runtime != current.runtime and not reasons:
            reasons.append(_requalified_runtime(current, earlier, latest, policy))
        return Verdict(status="new_baseline", reasons=tuple(reasons) or ("no earlier run on this config",))
    runtime_change = None
    if used and used[0].runtime != current.runtime:
        runtime_change = f"runtime changed since the last run: {used[0].runtime} -> {current.runtime}"
    if len(used) < policy.min_history:
        reason = (f"{len(used)} earlier run(s) on this config, {policy.min_history} needed for a baseline"
                  if used else "first run on this config: it starts the baseline")
        return Verdict(status="insufficient_history", baseline_runs=tuple(s.run_id for s in used),
                       reasons=(reason, *([runtime_change] if runtime_change else [])),
                       runtime_change=runtime_change)
    comparisons = tuple(
        compare_metric(m, current.metrics.get(m), [s.metrics[m] for s in used if m in s.metrics], policy)
        for m in policy.metrics
    )
    regressed = [c for c in comparisons if c.status == "regression"]
    reasons = [_describe(c) for c in regressed]
    if runtime_change:
        reasons.append(runtime_change)
    return Verdict(status="regression" if regressed else "ok", comparisons=comparisons,
                   baseline_runs=tuple(s.run_id for s in used), reasons=tuple(reasons),
                   runtime_change=runtime_change)


def _requalified_runtime(current: Sample, earlier: Sequence[Sample], latest: Sample, policy: Policy) -> str:
    """The reason of a new baseline on a re-qualified runtime, with the ratios to the old one's."""
    old = [s for s in earlier if s.runtime == latest.runtime and s.config_hash == current.config_hash
           and s.workload_hash == current.workload_hash][:policy.window]
    ratios = []
    for metric in policy.metrics:
        values = [s.metrics[metric] for s in old if metric in s.metrics and math.isfinite(s.metrics[metric])]
        now = current.metrics.get(metric)
        if values and now is not None and statistics.median(values):
            ratios.append(f"{metric} x{now / statistics.median(values):.3f}")
    against = f"; against {latest.runtime}'s baseline: {', '.join(ratios)}" if ratios else ""
    return (f"runtime re-qualified ({latest.runtime} -> {current.runtime}): new baseline on the pinned "
            f"runtime{against}")


def _describe(c: MetricComparison) -> str:
    assert c.change is not None and c.tolerance is not None
    verb = "dropped" if c.direction == "higher_is_better" else "rose"
    return (f"{c.metric} {verb} {abs(c.change):.1%} ({c.baseline:.4g} -> {c.current:.4g}); "
            f"tolerance {c.tolerance:.1%} (noise {c.noise:.1%})")


def _short(value: str) -> str:
    return value[:12]
