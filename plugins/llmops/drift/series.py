"""Weekly eval runs and the series they form, keyed by eval-set content hash. Pure: no I/O.

A **series** is what a chart line shows: the weekly scores of one model alias (``champion``,
``previous``) of one registered model on one eval set, *while the eval set's content stays the
same*. The eval set's revision (the SHA-256 of its JSONL file, see
:func:`llmops.evals.evalset.file_revision`) is part of the key: when the file changes, the
scores before and after measure different things, so a new series starts there and the week
is reported as ``changed``, never as drift.

Weeks are ISO weeks written ``YYYY-Www`` (``2026-W47``); a rerun in the same week replaces
the earlier run of that week (the newest run counts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

_WEEK = re.compile(r"^(?P<year>\d{4})-W(?P<week>\d{2})$")


class SeriesError(ValueError):
    """Weekly eval records that cannot form a series; the message names the field and the fix."""


def iso_week(day: date | datetime) -> str:
    """The ISO week of ``day`` as ``YYYY-Www``."""
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"


def week_index(week: str) -> int:
    """Weeks since an arbitrary epoch (consecutive ISO weeks differ by 1, across years too)."""
    match = _WEEK.match(week or "")
    if not match:
        raise SeriesError(f"week {week!r} is not an ISO week; expected YYYY-Www, e.g. 2026-W47")
    try:
        monday = date.fromisocalendar(int(match["year"]), int(match["week"]), 1)
    except ValueError as exc:
        raise SeriesError(f"week {week!r} does not exist ({exc})") from exc
    return monday.toordinal() // 7


@dataclass(frozen=True)
class CategoryScore:
    """One category's mean score with its bootstrap interval, as the eval job logged it."""

    mean: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class ItemOutcome:
    """One eval item's answer and score in one run (joined by ``id`` across runs)."""

    id: str
    category: str
    score: float
    reference: str = ""
    prediction: str = ""
    error: str | None = None
    prompt: str = ""


@dataclass(frozen=True)
class WeeklyEval:
    """One eval run of one model version on one eval-set revision.

    ``alias`` is the registry alias the version held when it was evaluated (``champion``,
    ``previous``; ``qualify`` for a qualification baseline). ``items`` holds the per-item
    results where they were loaded (this week, last week, the baseline); older weeks only
    need their per-category ``scores``.
    """

    week: str
    model: str
    alias: str
    version: str
    evalset: str
    evalset_revision: str
    run_id: str
    scores: Mapping[str, CategoryScore]
    items: tuple[ItemOutcome, ...] = ()
    started_at: float = 0.0

    def __post_init__(self) -> None:
        week_index(self.week)
        for name in ("model", "alias", "evalset", "evalset_revision", "run_id"):
            if not getattr(self, name):
                raise SeriesError(f"weekly eval {self.run_id or '?'}: field {name!r} is empty; "
                                  "fix: tag the eval run with it")

    @property
    def label(self) -> str:
        """``2026-W47 (v3)``: the week and the version evaluated."""
        return f"{self.week} (v{self.version})"

    def item_scores(self, category: str) -> dict[str, float]:
        """Scores of one category's items, by item id."""
        return {i.id: i.score for i in self.items if i.category == category}


@dataclass(frozen=True)
class Series:
    """The weekly evals of one (model, alias, eval set) on one eval-set revision, oldest first.

    ``points`` ends with the current week. ``last_week`` is the most recent *earlier* weekly
    eval of the same model alias and eval set, whatever its revision: when its revision
    differs, the eval set changed since and :attr:`changed` is true.
    """

    model: str
    alias: str
    evalset: str
    evalset_revision: str
    points: tuple[WeeklyEval, ...]
    last_week: WeeklyEval | None = None
    dropped: tuple[str, ...] = field(default_factory=tuple)

    @property
    def current(self) -> WeeklyEval:
        return self.points[-1]

    @property
    def changed(self) -> bool:
        """The eval set's content differs from last week's: a new series starts this week."""
        return self.last_week is not None and self.last_week.evalset_revision != self.evalset_revision

    @property
    def comparable_last_week(self) -> WeeklyEval | None:
        """Last week's eval when it ran on the same eval-set revision, else None."""
        return None if self.changed else self.last_week


def build_series(current: WeeklyEval, history: Iterable[WeeklyEval], weeks: int) -> Series:
    """The series ``current`` belongs to: at most ``weeks`` points, the current one last.

    ``history`` may hold anything (other models, aliases, eval sets, the current week's own
    earlier runs); only earlier weeks of the same model, alias and eval set are kept, one per
    week (the newest run of a week), and only back to the last change of the eval set's
    revision.
    """
    if weeks < 1:
        raise SeriesError(f"weeks={weeks}: a series needs at least 1 week")
    now = week_index(current.week)
    newest: dict[str, WeeklyEval] = {}
    for run in history:
        if (run.model, run.alias, run.evalset) != (current.model, current.alias, current.evalset):
            continue
        if run.run_id == current.run_id or week_index(run.week) >= now:
            continue
        kept = newest.get(run.week)
        if kept is None or run.started_at > kept.started_at:
            newest[run.week] = run
    earlier = sorted(newest.values(), key=lambda r: week_index(r.week))
    last_week = earlier[-1] if earlier else None
    same: list[WeeklyEval] = []
    for run in reversed(earlier):
        if run.evalset_revision != current.evalset_revision:
            break  # the eval set changed here: what came before belongs to another series
        same.append(run)
    kept_points = list(reversed(same))[-(weeks - 1):] if weeks > 1 else []
    dropped = tuple(r.week for r in earlier if r not in kept_points)
    return Series(model=current.model, alias=current.alias, evalset=current.evalset,
                  evalset_revision=current.evalset_revision, points=(*kept_points, current),
                  last_week=last_week, dropped=dropped)
