"""Drift analysis, series and failure lists: pure functions, exhaustively, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from llmops.drift import analysis
from llmops.drift.analysis import (
    CHANGED,
    DRIFT,
    INCONCLUSIVE,
    NO_REFERENCE,
    STABLE,
    DriftInputError,
    DriftOptions,
    analyse_series,
    build_report,
    classify,
    compare_items,
    since_week,
    trend,
)
from llmops.drift.failures import newly_failing, worst_failing
from llmops.drift.series import (
    CategoryScore,
    ItemOutcome,
    SeriesError,
    WeeklyEval,
    build_series,
    iso_week,
    week_index,
)
from llmops.evals.stats import bootstrap_mean

OPTIONS = DriftOptions(threshold=0.05)


# -- builders (also used by test_drift_report) ------------------------------------------------

def outcomes(category: str, scores: Sequence[float]) -> list[ItemOutcome]:
    """Items ``<category>-0000``... with the given scores (a failing item answers ``wrong``)."""
    return [ItemOutcome(id=f"{category}-{i:04d}", category=category, score=float(s), reference=f"ref{i}",
                        prediction=f"ref{i}" if s >= 1 else "wrong", prompt=f"{category} question {i}")
            for i, s in enumerate(scores)]


def weekly(week: str, per_category: Mapping[str, Sequence[float]], *, alias: str = "champion", version: str = "1",
           revision: str = "rev-a", evalset: str = "set", model: str = "m", run_id: str | None = None,
           started_at: float = 0.0) -> WeeklyEval:
    """A weekly eval whose per-category scores are the bootstrap estimates of its items."""
    items = [item for cat, scores in per_category.items() for item in outcomes(cat, scores)]
    scores = {}
    for cat, values in per_category.items():
        est = bootstrap_mean([float(v) for v in values])
        scores[cat] = CategoryScore(est.mean, est.ci_low, est.ci_high, est.n)
    return WeeklyEval(week=week, model=model, alias=alias, version=version, evalset=evalset,
                      evalset_revision=revision, run_id=run_id or f"run-{alias}-{week}-{revision}-{started_at}",
                      scores=scores, items=tuple(items), started_at=started_at)


def passing(n: int, ones: int) -> list[float]:
    """``ones`` items scoring 1, then ``n - ones`` scoring 0."""
    return [1.0] * ones + [0.0] * (n - ones)


def analyse(current: WeeklyEval, history: Sequence[WeeklyEval] = (), *, baseline: WeeklyEval | None = None,
            previous: WeeklyEval | None = None, options: DriftOptions = OPTIONS,
            categories: Sequence[str] | None = None) -> analysis.SeriesDrift:
    series = build_series(current, history, options.weeks)
    return analyse_series(series, baseline=baseline, previous=previous, options=options, categories=categories)


def row(result: analysis.SeriesDrift, category: str) -> analysis.CategoryDrift:
    return next(c for c in result.categories if c.category == category)


# -- classify ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("delta", "low", "high", "expected"), [
    (-0.20, -0.30, -0.10, DRIFT),          # beyond the threshold, interval below 0
    (0.20, 0.10, 0.30, DRIFT),             # upwards too
    (0.0, 0.0, 0.0, STABLE),               # nothing moved
    (0.03, -0.01, 0.05, STABLE),           # interval within +-threshold
    (-0.05, -0.05, -0.05, STABLE),         # exactly at the threshold: not beyond it
    (-0.20, -0.45, 0.02, INCONCLUSIVE),    # big change but the interval includes 0: too wide
    (0.01, -0.20, 0.22, INCONCLUSIVE),     # small change, interval too wide to rule out drift
    (-0.04, -0.08, -0.01, INCONCLUSIVE),   # significant but within the threshold; the interval reaches past it
])
def test_classify(delta: float, low: float, high: float, expected: str) -> None:
    assert classify(delta, low, high, 0.05) == expected


def test_classify_refuses_bad_numbers() -> None:
    with pytest.raises(DriftInputError, match="reversed"):
        classify(0.0, 0.2, -0.2, 0.05)
    with pytest.raises(DriftInputError, match="finite"):
        classify(float("nan"), 0.0, 0.0, 0.05)


def test_options_are_validated() -> None:
    with pytest.raises(DriftInputError, match="threshold"):
        DriftOptions(threshold=1.5)
    with pytest.raises(DriftInputError, match="weeks"):
        DriftOptions(weeks=1)
    with pytest.raises(DriftInputError, match="fail_on"):
        DriftOptions(fail_on="sometimes")


# -- paired comparisons -----------------------------------------------------------------------

def _scores(values: Sequence[float], prefix: str = "i") -> dict[str, float]:
    return {f"{prefix}{i:03d}": float(v) for i, v in enumerate(values)}


def test_identical_runs_are_stable_with_a_zero_interval() -> None:
    same = _scores(passing(40, 30))
    result = compare_items(same, dict(same), reference_kind="last_week", reference_label="W1", options=OPTIONS)
    assert (result.verdict, result.delta, result.ci_low, result.ci_high, result.n) == (STABLE, 0.0, 0.0, 0.0, 40)
    assert result.direction is None


def test_a_real_drop_is_drift_with_its_direction() -> None:
    before, now = _scores(passing(40, 40)), _scores(passing(40, 20))
    result = compare_items(now, before, reference_kind="last_week", reference_label="W1", options=OPTIONS)
    assert result.verdict == DRIFT and result.direction == "down"
    assert result.delta == pytest.approx(-0.5)
    assert result.ci_high < 0 and (result.current_mean, result.reference_mean) == (0.5, 1.0)
    assert "dropped by 0.500" in result.reason and "excludes 0" in result.reason


def test_too_few_items_leave_a_large_change_inconclusive() -> None:
    before, now = _scores(passing(5, 5)), _scores(passing(5, 4))
    result = compare_items(now, before, reference_kind="last_week", reference_label="W1", options=OPTIONS)
    assert result.delta == pytest.approx(-0.2)
    assert result.ci_low < 0 <= result.ci_high + 1e-12
    assert result.verdict == INCONCLUSIVE and "too wide" in result.reason


def test_pairing_uses_common_item_ids_only_and_ignores_input_order() -> None:
    before = {"a": 1.0, "b": 1.0, "c": 1.0, "gone": 0.0}
    now = {"c": 0.0, "b": 1.0, "a": 1.0, "new": 1.0}
    first = compare_items(now, before, reference_kind="last_week", reference_label="W1", options=OPTIONS)
    again = compare_items(dict(reversed(list(now.items()))), before, reference_kind="last_week",
                          reference_label="W1", options=OPTIONS)
    assert first.n == 3 and first.delta == pytest.approx(-1 / 3)
    assert first == again


def test_no_common_items_is_inconclusive() -> None:
    result = compare_items({"a": 1.0}, {"b": 1.0}, reference_kind="baseline", reference_label="q", options=OPTIONS)
    assert result.verdict == INCONCLUSIVE and result.delta is None and "nothing to pair" in result.reason


# -- trend and since ----------------------------------------------------------------------------

def test_trend_slope_counts_calendar_weeks() -> None:
    points = [("2026-W40", 1.0), ("2026-W41", 0.9), ("2026-W43", 0.7)]  # W42 missed
    result = trend(points)
    assert result.slope_per_week == pytest.approx(-0.1)
    assert result.change == pytest.approx(-0.3) and (result.first_week, result.weeks) == ("2026-W40", 3)
    single = trend([("2026-W40", 1.0)])
    assert single.slope_per_week is None and single.change is None


def test_since_week_is_the_start_of_the_run_beyond_the_threshold() -> None:
    points = [("2026-W40", 0.80), ("2026-W41", 1.0), ("2026-W42", 0.90), ("2026-W43", 0.85)]
    assert since_week(points, 1.0, 0.05, "down") == "2026-W42"  # W40 was low too, but W41 recovered
    assert since_week(points, 0.5, 0.05, "up") == "2026-W40"
    assert since_week(points, 0.9, 0.05, "down") is None
    with pytest.raises(DriftInputError):
        since_week(points, 1.0, 0.05, "sideways")


# -- series keyed by eval-set hash ------------------------------------------------------------

def test_iso_weeks_are_consecutive_across_years() -> None:
    from datetime import date

    assert iso_week(date(2025, 12, 29)) == "2026-W01"
    assert week_index("2026-W01") - week_index("2025-W52") == 1
    for bad in ("2026-47", "2026-W99", ""):
        with pytest.raises(SeriesError):
            week_index(bad)


def test_series_keeps_one_run_per_earlier_week_of_the_same_alias_and_eval_set() -> None:
    now = weekly("2026-W47", {"c": [1.0]})
    history = [
        weekly("2026-W45", {"c": [1.0]}, started_at=1), weekly("2026-W45", {"c": [0.0]}, started_at=2),  # rerun
        weekly("2026-W46", {"c": [1.0]}),
        weekly("2026-W47", {"c": [0.0]}, run_id="same-week-earlier-run"),
        weekly("2026-W46", {"c": [0.0]}, alias="previous"),
        weekly("2026-W46", {"c": [0.0]}, evalset="other"),
        weekly("2026-W46", {"c": [0.0]}, model="other-model"),
        weekly("2026-W44", {"c": [1.0]}),
        now,
    ]
    series = build_series(now, history, weeks=3)
    assert [p.week for p in series.points] == ["2026-W45", "2026-W46", "2026-W47"]
    assert series.points[0].started_at == 2  # the newest run of a week counts
    assert series.last_week is not None and series.last_week.week == "2026-W46"
    assert not series.changed and series.dropped == ("2026-W44",)


def test_changed_eval_set_starts_a_new_series() -> None:
    now = weekly("2026-W47", {"c": [1.0]}, revision="rev-b")
    history = [weekly("2026-W45", {"c": [1.0]}, revision="rev-b"), weekly("2026-W46", {"c": [1.0]}, revision="rev-a")]
    series = build_series(now, history, weeks=8)
    assert series.changed and series.comparable_last_week is None
    assert [p.week for p in series.points] == ["2026-W47"]  # W45 is before the change back: another series


# -- analysis of a series ---------------------------------------------------------------------

def test_no_drift_when_nothing_changed() -> None:
    cats = {"reverse": passing(40, 38), "copy": passing(40, 40)}
    history = [weekly(f"2026-W{w}", cats) for w in (44, 45, 46)]
    result = analyse(weekly("2026-W47", cats), history)
    for category in ("reverse", "copy"):
        cat = row(result, category)
        assert cat.week.verdict == STABLE and cat.week.delta == 0.0 and not cat.drifted
        assert cat.trend.weeks == 4 and cat.trend.slope_per_week == pytest.approx(0.0)
        assert cat.baseline.verdict == NO_REFERENCE and cat.since is None
    report = build_report("m", "2026-W47", [result], OPTIONS)
    assert report.alerts == [] and not report.drift_detected


def test_real_drift_is_flagged_and_alerts_with_since() -> None:
    last = weekly("2026-W46", {"reverse": passing(40, 40), "copy": passing(40, 39)})
    now = weekly("2026-W47", {"reverse": passing(40, 4), "copy": passing(40, 39)}, version="2")
    previous = weekly("2026-W47", {"reverse": passing(40, 40), "copy": passing(40, 39)}, alias="previous")
    result = analyse(now, [last], previous=previous)
    reverse, copy = row(result, "reverse"), row(result, "copy")
    assert reverse.week.verdict == DRIFT and reverse.week.direction == "down"
    assert reverse.week.delta == pytest.approx(-0.9) and reverse.since == "2026-W47"
    assert reverse.vs_previous is not None and reverse.vs_previous.delta == pytest.approx(-0.9)
    assert copy.week.verdict == STABLE and not copy.drifted
    assert result.version_changed and result.last_week_version == "1"
    report = build_report("m", "2026-W47", [result], OPTIONS)
    assert [(a.category, a.reference) for a in report.alerts] == [("reverse", "last_week")]
    assert "set/reverse" in report.alerts[0].describe() and "since 2026-W47" in report.alerts[0].describe()


def test_changed_eval_set_is_reported_as_changed_never_drift() -> None:
    last = weekly("2026-W46", {"reverse": passing(40, 40)}, revision="rev-a")
    now = weekly("2026-W47", {"reverse": passing(40, 5)}, revision="rev-b")
    result = analyse(now, [last])
    cat = row(result, "reverse")
    assert cat.week.verdict == CHANGED and cat.week.delta is None and not cat.drifted
    assert result.changed_from == "rev-a"
    report = build_report("m", "2026-W47", [result], OPTIONS)
    assert report.alerts == [] and report.changed_evalsets == [("set", "rev-a", "rev-b")]


def test_too_wide_intervals_are_inconclusive_not_alerts() -> None:
    last = weekly("2026-W46", {"reverse": passing(6, 6)})
    now = weekly("2026-W47", {"reverse": passing(6, 5)})
    cat = row(analyse(now, [last]), "reverse")
    assert cat.week.verdict == INCONCLUSIVE and abs(cat.week.delta) > OPTIONS.threshold
    assert build_report("m", "2026-W47", [analyse(now, [last])], OPTIONS).alerts == []


def test_slow_drift_against_the_qualification_baseline() -> None:
    history = [weekly(f"2026-W{40 + k}", {"json": passing(20, 20 - k)}) for k in range(4)]
    now = weekly("2026-W44", {"json": passing(20, 16)})
    baseline = weekly("2026-W39", {"json": passing(20, 20)}, alias="qualify")
    cat = row(analyse(now, history, baseline=baseline), "json")
    assert cat.week.verdict == INCONCLUSIVE  # one item a week: each step is noise-sized
    assert cat.baseline.verdict == DRIFT and cat.baseline.delta == pytest.approx(-0.2)
    assert cat.since == "2026-W42"  # 0.90 is the first week beyond 1.0 - 0.05 that stayed beyond
    assert cat.trend.slope_per_week == pytest.approx(-0.05)


def test_baseline_on_another_eval_set_revision_is_changed() -> None:
    now = weekly("2026-W44", {"json": passing(20, 10)})
    baseline = weekly("2026-W39", {"json": passing(20, 20)}, alias="qualify", revision="rev-old")
    cat = row(analyse(now, baseline=baseline), "json")
    assert cat.baseline.verdict == CHANGED and not cat.drifted


def test_fail_on_and_alert_aliases_choose_what_alerts() -> None:
    last = weekly("2026-W46", {"arith": passing(40, 20)})
    better = weekly("2026-W47", {"arith": passing(40, 40)})
    up = analyse(better, [last])
    assert row(up, "arith").week.direction == "up"
    assert build_report("m", "2026-W47", [up], OPTIONS).alerts == []
    assert len(build_report("m", "2026-W47", [up], DriftOptions(fail_on="any")).alerts) == 1
    prev_last = weekly("2026-W46", {"arith": passing(40, 40)}, alias="previous")
    prev_now = weekly("2026-W47", {"arith": passing(40, 0)}, alias="previous")
    prev = analyse(prev_now, [prev_last])
    assert row(prev, "arith").drifted
    assert build_report("m", "2026-W47", [prev], OPTIONS).alerts == []  # previous does not serve traffic


def test_categories_can_be_selected_and_unknown_ones_are_refused() -> None:
    now = weekly("2026-W47", {"a": [1.0], "b": [1.0]})
    assert [c.category for c in analyse(now, categories=["b"]).categories] == ["b"]
    with pytest.raises(DriftInputError, match="'zz'"):
        analyse(now, categories=["zz"])


def test_report_orders_champion_first_and_serialises() -> None:
    prev = analyse(weekly("2026-W47", {"a": [1.0]}, alias="previous"))
    champ = analyse(weekly("2026-W47", {"a": [1.0]}))
    report = build_report("m", "2026-W47", [prev, champ], OPTIONS, notes=["n1"])
    assert [s.alias for s in report.series] == ["champion", "previous"]
    data = report.to_dict()
    assert data["drift_detected"] is False and data["notes"] == ["n1"] and len(data["series"]) == 2


# -- failure-case lists -----------------------------------------------------------------------

def test_worst_failing_puts_newly_failing_first_and_limits_per_category() -> None:
    last = outcomes("rev", [1, 0, 1, 0, 1, 1, 1])
    now = outcomes("rev", [1, 0, 0, 0, 0, 0, 1]) + outcomes("copy", [0.5, 1])
    worst = worst_failing(now, last, per_category=3)
    assert [c.id for c in worst["rev"]] == ["rev-0002", "rev-0004", "rev-0005"]  # newly failing before old ones
    assert all(c.newly_failing for c in worst["rev"])
    assert [c.id for c in worst["copy"]] == ["copy-0000"]
    assert worst["rev"][0].last_week_prediction == "ref2" and worst["rev"][0].prediction == "wrong"
    assert [c.id for c in worst_failing(now, last, per_category=10)["rev"]][-2:] == ["rev-0001", "rev-0003"]


def test_newly_failing_joins_by_item_id() -> None:
    last = outcomes("rev", [1, 0, 1, 1])
    now = list(reversed(outcomes("rev", [1, 0, 0, 1])))  # order does not matter: joined by id
    new = newly_failing(now, last)
    assert list(new) == ["rev"] and [c.id for c in new["rev"]] == ["rev-0002"]
    assert newly_failing(now, []) == {}
