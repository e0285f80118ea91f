"""The failure-case review lists: worst failing examples and examples that newly fail. Pure.

Items are joined across runs by item id (the eval set's own ids), so a list is only built
between runs on the same eval-set revision.

* **worst failing** per category: this week's items with the lowest scores (below
  ``pass_score``); among equal scores, the ones that newly fail come first, then by id.
* **newly failing** per category: items whose score fell since last week and that now fail
  (their answer last week and this week side by side).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmops.drift.series import ItemOutcome

PASS_SCORE = 1.0


@dataclass(frozen=True)
class FailureCase:
    """One failing item, with last week's answer when it is known."""

    id: str
    category: str
    prompt: str
    reference: str
    prediction: str
    score: float
    error: str | None = None
    last_week_prediction: str | None = None
    last_week_score: float | None = None

    @property
    def newly_failing(self) -> bool:
        return self.last_week_score is not None and self.last_week_score > self.score


def _case(item: ItemOutcome, before: ItemOutcome | None) -> FailureCase:
    return FailureCase(id=item.id, category=item.category, prompt=item.prompt, reference=item.reference,
                       prediction=item.prediction, score=item.score, error=item.error,
                       last_week_prediction=before.prediction if before else None,
                       last_week_score=before.score if before else None)


def worst_failing(current: Sequence[ItemOutcome], last_week: Sequence[ItemOutcome] = (), *, per_category: int = 5,
                  pass_score: float = PASS_SCORE) -> dict[str, list[FailureCase]]:
    """Up to ``per_category`` failing items of each category, worst first (see the module rules)."""
    if per_category < 0:
        raise ValueError(f"per_category={per_category} is negative")
    before = {i.id: i for i in last_week}
    groups: dict[str, list[FailureCase]] = {}
    for item in current:
        if item.score < pass_score:
            groups.setdefault(item.category, []).append(_case(item, before.get(item.id)))
    return {cat: sorted(cases, key=lambda c: (c.score, not c.newly_failing, c.id))[:per_category]
            for cat, cases in sorted(groups.items())}


def newly_failing(current: Sequence[ItemOutcome], last_week: Sequence[ItemOutcome], *,
                  pass_score: float = PASS_SCORE) -> dict[str, list[FailureCase]]:
    """Items that scored lower than last week and now fail, by category (ids ascending)."""
    before = {i.id: i for i in last_week}
    groups: dict[str, list[FailureCase]] = {}
    for item in current:
        then = before.get(item.id)
        if then is not None and item.score < then.score and item.score < pass_score:
            groups.setdefault(item.category, []).append(_case(item, then))
    return {cat: sorted(cases, key=lambda c: c.id) for cat, cases in sorted(groups.items())}
