"""Score statistics: per-category means with percentile-bootstrap confidence intervals."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreEstimate:
    """A mean score and its bootstrap confidence interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int


def bootstrap_mean(values: Sequence[float], *, resamples: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> ScoreEstimate:
    """Mean of ``values`` with a percentile-bootstrap interval (seeded, so reruns agree)."""
    n = len(values)
    if n == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    mean = sum(values) / n
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1.0 - confidence) / 2.0
    low = means[int(tail * (resamples - 1))]
    high = means[int(round((1.0 - tail) * (resamples - 1)))]
    return ScoreEstimate(mean=mean, ci_low=low, ci_high=high, n=n)
