"""Score a model's answers on an eval set: per item, then per category with intervals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from llmops.evals.evalset import EvalItem
from llmops.evals.scorers import SCORERS
from llmops.evals.stats import ScoreEstimate, bootstrap_mean
from llmops.io.openai_client import Completion


@dataclass(frozen=True)
class ItemResult:
    """One item's answer and score (kept for failure-case review)."""

    id: str
    category: str
    reference: str
    prediction: str
    score: float
    latency_s: float
    error: str | None


def score_items(items: Sequence[EvalItem], completions: Sequence[Completion]) -> list[ItemResult]:
    """Score each completion with its item's scorer; a transport error scores 0."""
    if len(items) != len(completions):
        raise ValueError(f"{len(items)} items but {len(completions)} completions")
    return [
        ItemResult(id=item.id, category=item.category, reference=item.reference, prediction=done.text,
                   score=0.0 if done.error else SCORERS[item.scorer](done.text, item.reference),
                   latency_s=done.latency_s, error=done.error)
        for item, done in zip(items, completions, strict=True)
    ]


def category_scores(results: Sequence[ItemResult], *, seed: int = 0) -> dict[str, ScoreEstimate]:
    """Mean score per category with a 95% bootstrap interval, plus ``overall``."""
    groups: dict[str, list[float]] = {}
    for result in results:
        groups.setdefault(result.category, []).append(result.score)
    estimates = {cat: bootstrap_mean(scores, seed=seed) for cat, scores in sorted(groups.items())}
    estimates["overall"] = bootstrap_mean([r.score for r in results], seed=seed)
    return estimates


def results_as_rows(results: Sequence[ItemResult]) -> list[dict[str, object]]:
    """Per-item results as plain dicts (the MLflow table artifact)."""
    return [asdict(r) for r in results]
