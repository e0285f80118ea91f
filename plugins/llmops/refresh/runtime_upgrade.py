"""The runtime re-qualification's decision (pure): do the same weights answer the same on a new runtime?

A new serving runtime (a new vLLM image digest, or a CUDA/driver bump: a new
:attr:`~llmops.core.runtimes.Runtime.identity`) is judged by evaluating the champion's weights
twice in one run, on the same hardware class and eval set: once on the runtime it is pinned to
(``old``), once on the new one (``new``). The failure this catches is the silent kernel
miscompile after a driver or image upgrade: same weights, different answers.

Decision rules, per category, over the items paired by id (``EPS`` absorbs float rounding, so a
value exactly at a threshold passes):

* an item's answer **changed** when its prediction strings differ (exactly: whitespace counts)
  or exactly one of the two runs errored on it;
* ``changed_share`` = changed items / paired items; ``score_delta`` = mean(new) - mean(old);
* the category **changed** iff ``changed_share > max_answer_change + EPS`` or
  ``|score_delta| > max_score_delta + EPS``; both directions count (a runtime that scores
  higher on the same weights is computing something else too);
* the runtime passes iff no category changed.

The two runs must cover exactly the same item ids with the same categories (same eval-set
revision and limit), each id once; otherwise :class:`RuntimeUpgradeInputError` (naming the ids):
a paired comparison over different items would judge the eval plan, not the runtime.

Nothing here does I/O: :mod:`llmops.refresh.runtime_requalify` reads the per-item results from
MLflow, calls :func:`judge_runtime_upgrade` and acts on the :class:`RuntimeVerdict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

EPS = 1e-9
"""Tolerance of threshold comparisons (means of many floats are not exact)."""

DEFAULT_MAX_ANSWER_CHANGE = 0.0
"""Share of a category's answers that may change: none.

Greedy decoding (temperature 0, which every eval request uses) of the same weights is a
deterministic function of the kernels: the same runtime gives the same strings run after run
(measured on the embedded CPU runtime, float32: three repeats at concurrency 8 identical on every
item; serving the same weights in bfloat16 changed 2 of 400 answers, the same two every time).
A different string on the same weights is the kernel computing something else, which is what
this check exists to catch, so the default allows none. Raise it only for a runtime whose
kernels are known to vary with batch composition (some GPU attention kernels flip near-tied
tokens), after measuring that runtime against itself twice, and name the measured share in the
run's Params."""

DEFAULT_MAX_SCORE_DELTA = 0.0
"""Largest change of a category's mean score: none. Identical answers score identically (the
scorers are deterministic), so with :data:`DEFAULT_MAX_ANSWER_CHANGE` 0 this only matters once
answer changes are tolerated: it then bounds their net effect on the score."""

_SHOWN_IDS = 5


class RuntimeUpgradeInputError(ValueError):
    """Two runs the comparison refuses to pair (different items, duplicates, bad values)."""


@dataclass(frozen=True)
class ItemAnswer:
    """One eval item's answer and score in one run (a row of the eval job's ``eval_results.json``)."""

    id: str
    category: str
    prediction: str
    score: float
    error: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], where: str = "eval_results.json") -> ItemAnswer:
        """Build from one ``eval_results.json`` row; a row without id, category, prediction or
        score is a :class:`RuntimeUpgradeInputError` naming ``where`` and the field."""
        missing = [key for key in ("id", "category", "prediction", "score") if key not in row]
        if missing:
            raise RuntimeUpgradeInputError(f"{where}: row {row.get('id', '?')!r} has no {', '.join(missing)}; "
                                           f"fix: compare eval runs written by llmops.jobs.evaluate")
        try:
            score = float(row["score"])
        except (TypeError, ValueError) as exc:
            raise RuntimeUpgradeInputError(f"{where}: item {row['id']!r} has score {row['score']!r}; "
                                           f"scores must be numbers") from exc
        error = row.get("error")
        return cls(id=str(row["id"]), category=str(row["category"]), prediction=str(row["prediction"] or ""),
                   score=score, error=None if error is None else str(error))

    def same_answer(self, other: ItemAnswer) -> bool:
        """True when both runs answered this item with the same string (and neither or both errored)."""
        return self.prediction == other.prediction and (self.error is None) == (other.error is None)


@dataclass(frozen=True)
class CategoryComparison:
    """One category of the paired comparison (see the module rules)."""

    category: str
    n: int
    changed_answers: int
    changed_share: float
    old_mean: float
    new_mean: float
    score_delta: float
    max_answer_change: float
    max_score_delta: float
    changed: bool
    reason: str
    changed_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeVerdict:
    """Whether the new runtime answers like the pinned one, with every category's comparison."""

    passed: bool
    categories: tuple[CategoryComparison, ...]
    max_answer_change: float
    max_score_delta: float
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed_categories(self) -> list[str]:
        """Names of the categories whose answers or score changed beyond the tolerances."""
        return [row.category for row in self.categories if row.changed]

    def per_category(self) -> dict[str, dict[str, Any]]:
        """``{category: comparison}`` as JSON-ready dicts (the verdict file's ``per_category``)."""
        return {row.category: {k: v for k, v in asdict(row).items() if k != "category"} | {
            "changed_ids": list(row.changed_ids)} for row in self.categories}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (MLflow ``log_dict``, XCom, the verdict file)."""
        return {"passed": self.passed, "changed_categories": self.changed_categories,
                "max_answer_change": self.max_answer_change, "max_score_delta": self.max_score_delta,
                "per_category": self.per_category(), "reasons": list(self.reasons)}

    def to_markdown(self) -> str:
        """A readable report (MLflow ``log_text``)."""
        head = "PASSED: same answers" if self.passed else "FAILED: answers changed"
        lines = [f"## Runtime re-qualification: {head}", "",
                 f"Tolerances: share of changed answers <= {self.max_answer_change:.3f}, "
                 f"|score delta| <= {self.max_score_delta:.3f} per category.", "",
                 "| category | n | changed answers | share | old mean | new mean | delta | result |",
                 "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in self.categories:
            lines.append(f"| {r.category} | {r.n} | {r.changed_answers} | {r.changed_share:.3f} | {r.old_mean:.3f} | "
                         f"{r.new_mean:.3f} | {r.score_delta:+.3f} | {'CHANGED' if r.changed else 'same'} |")
        lines += ["", "**Reasons**", ""] + [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines) + "\n"


def judge_runtime_upgrade(old_items: Iterable[ItemAnswer], new_items: Iterable[ItemAnswer], *,
                          max_answer_change: float = DEFAULT_MAX_ANSWER_CHANGE,
                          max_score_delta: float = DEFAULT_MAX_SCORE_DELTA) -> RuntimeVerdict:
    """Compare the same weights' answers on the pinned runtime (``old_items``) and the new one
    (``new_items``), per category (see the module rules); raise :class:`RuntimeUpgradeInputError`
    when the two runs cannot be paired."""
    for name, value in (("max_answer_change", max_answer_change), ("max_score_delta", max_score_delta)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
            raise RuntimeUpgradeInputError(f"{name}: {value!r} is not a number in [0, 1]")
    old = _by_id(old_items, "old runtime")
    new = _by_id(new_items, "new runtime")
    _check_paired(old, new)
    groups: dict[str, list[str]] = {}
    for item_id, item in old.items():
        groups.setdefault(item.category, []).append(item_id)
    rows = [_compare(name, sorted(ids), old, new, max_answer_change, max_score_delta)
            for name, ids in sorted(groups.items())]
    reasons = [row.reason for row in rows if row.changed]
    passed = not reasons
    if passed:
        reasons = [f"passed: {sum(r.n for r in rows)} items in {len(rows)} categories answered the same "
                   f"within the tolerances"]
    return RuntimeVerdict(passed=passed, categories=tuple(rows), max_answer_change=float(max_answer_change),
                          max_score_delta=float(max_score_delta), reasons=tuple(reasons))


def _by_id(items: Iterable[ItemAnswer], which: str) -> dict[str, ItemAnswer]:
    kept: dict[str, ItemAnswer] = {}
    for item in items:
        if item.id in kept:
            raise RuntimeUpgradeInputError(f"{which}: item id {item.id!r} appears twice; fix: compare one eval "
                                           f"run per runtime")
        if not item.category:
            raise RuntimeUpgradeInputError(f"{which}: item {item.id!r} has an empty category")
        if not isinstance(item.score, (int, float)) or not math.isfinite(item.score):
            raise RuntimeUpgradeInputError(f"{which}: item {item.id!r} has score {item.score!r}; scores must be "
                                           f"finite numbers")
        kept[item.id] = item
    if not kept:
        raise RuntimeUpgradeInputError(f"{which}: no scored items; fix: the eval run wrote an empty "
                                       f"eval_results.json, run it again")
    return kept


def _check_paired(old: Mapping[str, ItemAnswer], new: Mapping[str, ItemAnswer]) -> None:
    only_old = sorted(set(old) - set(new))
    only_new = sorted(set(new) - set(old))
    if only_old or only_new:
        parts = [f"{len(ids)} only on the {which} runtime ({_ids(ids)})"
                 for which, ids in (("old", only_old), ("new", only_new)) if ids]
        raise RuntimeUpgradeInputError(f"the two eval runs scored different items: {'; '.join(parts)}; fix: "
                                       f"evaluate both runtimes on the same eval-set revision and limit_per_category")
    moved = sorted(i for i in old if old[i].category != new[i].category)
    if moved:
        raise RuntimeUpgradeInputError(f"items {_ids(moved)} have different categories in the two runs; fix: "
                                       f"evaluate both runtimes on the same eval-set revision")


def _compare(category: str, ids: list[str], old: Mapping[str, ItemAnswer], new: Mapping[str, ItemAnswer],
             max_answer_change: float, max_score_delta: float) -> CategoryComparison:
    changed_ids = [i for i in ids if not old[i].same_answer(new[i])]
    n = len(ids)
    share = len(changed_ids) / n
    old_mean = math.fsum(old[i].score for i in ids) / n
    new_mean = math.fsum(new[i].score for i in ids) / n
    delta = new_mean - old_mean
    why = []
    if share > max_answer_change + EPS:
        why.append(f"{len(changed_ids)} of {n} answers changed ({share:.1%} > {max_answer_change:.1%} allowed; "
                   f"e.g. {_ids(changed_ids)})")
    if abs(delta) > max_score_delta + EPS:
        why.append(f"mean score moved {old_mean:.3f} -> {new_mean:.3f} ({delta:+.3f}, more than "
                   f"{max_score_delta:.3f} allowed)")
    changed = bool(why)
    reason = (f"category {category!r}: " + "; ".join(why)) if changed else (
        f"category {category!r}: {len(changed_ids)} of {n} answers changed, score delta {delta:+.3f}: within tolerance")
    return CategoryComparison(category=category, n=n, changed_answers=len(changed_ids), changed_share=share,
                              old_mean=old_mean, new_mean=new_mean, score_delta=delta,
                              max_answer_change=float(max_answer_change), max_score_delta=float(max_score_delta),
                              changed=changed, reason=reason, changed_ids=tuple(changed_ids[:_SHOWN_IDS]))


def _ids(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOWN_IDS])
    return shown + (f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else "")
