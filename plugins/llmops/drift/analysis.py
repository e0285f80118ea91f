"""Drift analysis of the weekly evals, as pure functions of scores and thresholds. No I/O.

Per category of a series (see :mod:`llmops.drift.series`), three comparisons:

* **week**: this week against the most recent earlier week of the series;
* **baseline**: this week against the champion version's qualification run (its eval on the
  same hardware class when the refresh pipeline qualified it);
* **vs previous** (context, never an alert): the champion against the ``previous`` alias this week.

Each comparison is **paired by item id**: ``delta = mean(current - reference)`` over the items
both runs scored, and its interval is a seeded percentile bootstrap of those per-item
differences (resampling item ids jointly for both runs), at ``confidence`` (default 95%).
The verdict (``EPS`` absorbs float rounding, so a delta exactly at the threshold is not drift):

* ``drift``: ``|delta| > threshold`` AND the interval excludes 0 (``ci_low > 0`` or ``ci_high < 0``);
* ``stable``: the whole interval lies within ``[-threshold, +threshold]``;
* ``inconclusive``: anything else: the interval is too wide to tell a drift of the threshold's
  size from noise (too few items, or answers that flip both ways);
* ``changed``: the reference was scored on another eval-set revision (the eval set's content
  changed): not comparable, never drift;
* ``no_reference``: nothing to compare with (first week of a series, no qualification run).

**Trend**: least-squares slope of the weekly means over the series' last N weeks (per week,
weeks counted by ISO week number, so a missed week leaves a gap), and the change from the
first to the last point. **Since when**: for a drift, the earliest week from which every week
of the series up to now is beyond the threshold from the reference in the drift's direction.

An **alert** is a ``drift`` (week or baseline) of a category of an alerting alias (default
``champion``) in the direction ``fail_on`` names (``regression``: downwards only; ``any``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llmops.drift.series import CategoryScore, Series, WeeklyEval, week_index
from llmops.evals.stats import bootstrap_mean

EPS = 1e-9

DRIFT = "drift"
STABLE = "stable"
INCONCLUSIVE = "inconclusive"
CHANGED = "changed"
NO_REFERENCE = "no_reference"

FAIL_ON = ("regression", "any")


class DriftInputError(ValueError):
    """Options or inputs the analysis refuses; the message names the field and the fix."""


@dataclass(frozen=True)
class DriftOptions:
    """Knobs of the analysis (the DAG's Params)."""

    threshold: float = 0.05
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0
    weeks: int = 8
    fail_on: str = "regression"
    alert_aliases: tuple[str, ...] = ("champion",)

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 1:
            raise DriftInputError(f"DriftOptions.threshold: {self.threshold} is not in [0, 1)")
        if not 0 < self.confidence < 1:
            raise DriftInputError(f"DriftOptions.confidence: {self.confidence} is not in (0, 1)")
        if self.resamples < 1:
            raise DriftInputError(f"DriftOptions.resamples: {self.resamples} is not >= 1")
        if self.weeks < 2:
            raise DriftInputError(f"DriftOptions.weeks: {self.weeks}; a trend needs at least 2 weeks")
        if self.fail_on not in FAIL_ON:
            raise DriftInputError(f"DriftOptions.fail_on: {self.fail_on!r}; use one of {FAIL_ON}")


@dataclass(frozen=True)
class Comparison:
    """One category's paired comparison of this week with a reference run."""

    reference: str  # "last_week" | "baseline" | "previous"
    reference_label: str
    verdict: str
    reason: str
    n: int = 0
    current_mean: float | None = None
    reference_mean: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def direction(self) -> str | None:
        """``down`` or ``up`` for a drift, else None."""
        if self.verdict != DRIFT or self.delta is None:
            return None
        return "down" if self.delta < 0 else "up"


@dataclass(frozen=True)
class Trend:
    """The series' weekly means over the window: slope per week and change first -> last."""

    weeks: int
    first_week: str
    last_week: str
    slope_per_week: float | None
    change: float | None


@dataclass(frozen=True)
class WeekPoint:
    """One week of a category's series (what the chart draws)."""

    week: str
    version: str
    mean: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class CategoryDrift:
    """Everything the report says about one category of one series."""

    category: str
    current: CategoryScore
    points: tuple[WeekPoint, ...]
    week: Comparison
    baseline: Comparison
    vs_previous: Comparison | None
    trend: Trend
    since: str | None = None

    @property
    def drifted(self) -> bool:
        """A drift against last week or against the qualification baseline (either direction)."""
        return DRIFT in (self.week.verdict, self.baseline.verdict)

    def drifts(self) -> list[Comparison]:
        """The comparisons whose verdict is drift."""
        return [c for c in (self.week, self.baseline) if c.verdict == DRIFT]


@dataclass(frozen=True)
class SeriesDrift:
    """The analysis of one series (one model alias on one eval-set revision) this week."""

    model: str
    alias: str
    version: str
    evalset: str
    evalset_revision: str
    week: str
    run_id: str
    last_week: str | None
    last_week_version: str | None
    changed_from: str | None
    baseline_run_id: str | None
    categories: tuple[CategoryDrift, ...]

    @property
    def label(self) -> str:
        """``champion v3 on synthetic_chat_v1``."""
        return f"{self.alias} v{self.version} on {self.evalset}"

    @property
    def version_changed(self) -> bool:
        """A different version held this alias last week (a promotion or a rollback since)."""
        return self.last_week_version is not None and self.last_week_version != self.version


@dataclass(frozen=True)
class Alert:
    """A drift that fails the run's final check: what drifted, by how much, since when."""

    model: str
    alias: str
    version: str
    evalset: str
    category: str
    reference: str
    reference_label: str
    delta: float
    ci_low: float
    ci_high: float
    since: str | None

    def describe(self) -> str:
        """One line for the summary and the task log."""
        since = f", since {self.since}" if self.since else ""
        return (f"{self.evalset}/{self.category}: {self.alias} v{self.version} moved {self.delta:+.3f} "
                f"vs {self.reference_label} (CI [{self.ci_low:+.3f}, {self.ci_high:+.3f}]){since}")


@dataclass(frozen=True)
class DriftReport:
    """The week's analysis over every series, with the alerts that fail the final check."""

    model: str
    week: str
    options: DriftOptions
    series: tuple[SeriesDrift, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def alerts(self) -> list[Alert]:
        """Drifts of alerting aliases in the ``fail_on`` direction, in report order."""
        found = []
        for s in self.series:
            if s.alias not in self.options.alert_aliases:
                continue
            for cat in s.categories:
                for comp in cat.drifts():
                    if self.options.fail_on == "regression" and comp.direction != "down":
                        continue
                    found.append(Alert(model=s.model, alias=s.alias, version=s.version, evalset=s.evalset,
                                       category=cat.category, reference=comp.reference,
                                       reference_label=comp.reference_label, delta=float(comp.delta or 0.0),
                                       ci_low=float(comp.ci_low or 0.0), ci_high=float(comp.ci_high or 0.0),
                                       since=cat.since))
        return found

    @property
    def drift_detected(self) -> bool:
        return bool(self.alerts)

    @property
    def changed_evalsets(self) -> list[tuple[str, str, str]]:
        """(eval set, old revision, new revision) of the series that started a new series this week."""
        seen: dict[str, tuple[str, str, str]] = {}
        for s in self.series:
            if s.changed_from:
                seen.setdefault(s.evalset, (s.evalset, s.changed_from, s.evalset_revision))
        return list(seen.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``mlflow.log_dict`` and the job's result)."""
        return {"model": self.model, "week": self.week, "options": asdict(self.options),
                "drift_detected": self.drift_detected, "alerts": [asdict(a) for a in self.alerts],
                "changed_evalsets": [list(c) for c in self.changed_evalsets], "notes": list(self.notes),
                "series": [asdict(s) for s in self.series]}


def classify(delta: float, ci_low: float, ci_high: float, threshold: float) -> str:
    """``drift``, ``stable`` or ``inconclusive`` for a delta and its interval (see the module rules)."""
    for name, value in (("delta", delta), ("ci_low", ci_low), ("ci_high", ci_high)):
        if not math.isfinite(value):
            raise DriftInputError(f"classify: {name} is {value!r}; scores must be finite")
    if ci_low > ci_high + EPS:
        raise DriftInputError(f"classify: interval [{ci_low}, {ci_high}] is reversed")
    exceeds = abs(delta) > threshold + EPS
    excludes_zero = ci_low > EPS or ci_high < -EPS
    if exceeds and excludes_zero:
        return DRIFT
    if ci_low >= -threshold - EPS and ci_high <= threshold + EPS:
        return STABLE
    return INCONCLUSIVE


def compare_items(current: Mapping[str, float], reference: Mapping[str, float], *, reference_kind: str,
                  reference_label: str, options: DriftOptions) -> Comparison:
    """Paired comparison of two runs' item scores of one category (joined by item id)."""
    ids = sorted(set(current) & set(reference))  # fixed order: the seeded bootstrap is reproducible
    if not ids:
        return Comparison(reference_kind, reference_label, INCONCLUSIVE,
                          f"no item scored in both this week's run and {reference_label}: nothing to pair")
    diffs = [float(current[i]) - float(reference[i]) for i in ids]
    est = bootstrap_mean(diffs, resamples=options.resamples, confidence=options.confidence, seed=options.seed)
    cur_mean = sum(float(current[i]) for i in ids) / len(ids)
    ref_mean = sum(float(reference[i]) for i in ids) / len(ids)
    verdict = classify(est.mean, est.ci_low, est.ci_high, options.threshold)
    ci = f"{options.confidence:.0%} CI [{est.ci_low:+.3f}, {est.ci_high:+.3f}]"
    moves = f"{ref_mean:.3f} -> {cur_mean:.3f} (n={len(ids)})"
    if verdict == DRIFT:
        reason = (f"{'dropped' if est.mean < 0 else 'rose'} by {abs(est.mean):.3f} vs {reference_label}: {moves}, "
                  f"more than the threshold {options.threshold:.3f}, and the {ci} excludes 0")
    elif verdict == STABLE:
        reason = f"changed {est.mean:+.3f} vs {reference_label}: {moves}; the {ci} is within ±{options.threshold:.3f}"
    else:
        reason = (f"changed {est.mean:+.3f} vs {reference_label}: {moves}; the {ci} is too wide to tell a "
                  f"{options.threshold:.3f} drift from noise")
    return Comparison(reference_kind, reference_label, verdict, reason, n=len(ids), current_mean=cur_mean,
                      reference_mean=ref_mean, delta=est.mean, ci_low=est.ci_low, ci_high=est.ci_high)


def trend(points: Sequence[tuple[str, float]]) -> Trend:
    """Least-squares slope per week and first -> last change of ``(week, mean)`` points (oldest first)."""
    if not points:
        raise DriftInputError("trend: no points")
    xs = [float(week_index(w)) for w, _ in points]
    ys = [float(m) for _, m in points]
    if len(points) < 2:
        return Trend(1, points[0][0], points[0][0], None, None)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else None
    return Trend(len(points), points[0][0], points[-1][0], slope, ys[-1] - ys[0])


def since_week(points: Sequence[tuple[str, float]], reference_mean: float, threshold: float,
               direction: str) -> str | None:
    """The earliest week from which every point up to the newest is beyond ``threshold`` from the reference.

    ``direction`` is ``down`` (below ``reference_mean - threshold``) or ``up``. None when the
    newest point itself is not beyond it.
    """
    if direction not in ("down", "up"):
        raise DriftInputError(f"since_week: direction {direction!r}; use 'down' or 'up'")
    since = None
    for week, mean in reversed(points):
        beyond = (mean < reference_mean - threshold - EPS) if direction == "down" else \
                 (mean > reference_mean + threshold + EPS)
        if not beyond:
            break
        since = week
    return since


def analyse_series(series: Series, *, baseline: WeeklyEval | None, previous: WeeklyEval | None,
                   options: DriftOptions, categories: Iterable[str] | None = None) -> SeriesDrift:
    """Analyse every category of ``series``'s current week (or only ``categories``).

    ``baseline`` is the champion version's qualification run (None when there is none);
    ``previous`` is the ``previous`` alias's eval this week (None when there is none).
    """
    current = series.current
    wanted = list(categories) if categories else [c for c in current.scores if c != "overall"]
    missing = [c for c in wanted if c not in current.scores]
    if missing:
        raise DriftInputError(f"categories {missing} are not scored in {current.evalset} (run {current.run_id}); "
                              f"scored: {sorted(c for c in current.scores if c != 'overall')}")
    rows = []
    for category in wanted:
        points = tuple(WeekPoint(p.week, p.version, s.mean, s.ci_low, s.ci_high, s.n)
                       for p in series.points if (s := p.scores.get(category)) is not None)
        now_items = current.item_scores(category)
        week_cmp = _week_comparison(series, category, now_items, options)
        base_cmp = _reference_comparison(current, baseline, category, now_items, options, "baseline",
                                         "the qualification baseline")
        prev_cmp = (None if previous is None else
                    _reference_comparison(current, previous, category, now_items, options, "previous",
                                          "previous"))
        series_means = [(p.week, p.mean) for p in points]
        found = [since_week(series_means, comp.reference_mean, options.threshold, comp.direction)
                 for comp in (week_cmp, base_cmp) if comp.direction and comp.reference_mean is not None]
        since = min((w for w in found if w), key=week_index, default=None)
        rows.append(CategoryDrift(category=category, current=current.scores[category], points=points,
                                  week=week_cmp, baseline=base_cmp, vs_previous=prev_cmp,
                                  trend=trend(series_means), since=since))
    return SeriesDrift(
        model=current.model, alias=current.alias, version=current.version, evalset=current.evalset,
        evalset_revision=current.evalset_revision, week=current.week, run_id=current.run_id,
        last_week=series.last_week.week if series.last_week else None,
        last_week_version=series.last_week.version if series.last_week else None,
        changed_from=series.last_week.evalset_revision if series.changed and series.last_week else None,
        baseline_run_id=baseline.run_id if baseline else None, categories=tuple(rows))


def _week_comparison(series: Series, category: str, now_items: Mapping[str, float],
                     options: DriftOptions) -> Comparison:
    last = series.last_week
    if last is None:
        return Comparison("last_week", "last week", NO_REFERENCE,
                          "first weekly eval of this model alias on this eval set: nothing to compare with")
    label = f"{last.week} (v{last.version})"
    if series.changed:
        return Comparison("last_week", label, CHANGED,
                          f"the eval set's content changed since {last.week} (revision {last.evalset_revision} -> "
                          f"{series.evalset_revision}): a new series starts; not comparable, not drift")
    then = last.item_scores(category)
    if not then:
        return Comparison("last_week", label, NO_REFERENCE, f"{last.week} has no per-item results for {category!r}")
    return compare_items(now_items, then, reference_kind="last_week", reference_label=label, options=options)


def _reference_comparison(current: WeeklyEval, reference: WeeklyEval | None, category: str,
                          now_items: Mapping[str, float], options: DriftOptions, kind: str,
                          what: str) -> Comparison:
    if reference is None:
        return Comparison(kind, what, NO_REFERENCE, f"no {what} run recorded for this version")
    label = f"{what} (v{reference.version}, {reference.week})"
    if reference.evalset_revision != current.evalset_revision:
        return Comparison(kind, label, CHANGED,
                          f"{what} was scored on eval-set revision {reference.evalset_revision}, this week on "
                          f"{current.evalset_revision}: not comparable, not drift")
    then = reference.item_scores(category)
    if not then:
        return Comparison(kind, label, NO_REFERENCE, f"{what} has no per-item results for {category!r}")
    return compare_items(now_items, then, reference_kind=kind, reference_label=label, options=options)


def build_report(model: str, week: str, analysed: Sequence[SeriesDrift], options: DriftOptions,
                 notes: Iterable[str] = ()) -> DriftReport:
    """The report over the analysed series (champion first, then other aliases, then eval set)."""
    order = {alias: i for i, alias in enumerate(options.alert_aliases)}
    ranked = sorted(analysed, key=lambda s: (order.get(s.alias, len(order)), s.alias, s.evalset))
    return DriftReport(model=model, week=week, options=options, series=tuple(ranked), notes=tuple(notes))
