"""Scorers: pure functions ``(prediction, reference) -> 0.0 or 1.0``."""

from __future__ import annotations

import json
from collections.abc import Callable


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the answer equals the reference, ignoring surrounding whitespace."""
    return float(prediction.strip() == reference.strip())


def json_equal(prediction: str, reference: str) -> float:
    """1.0 when both parse as JSON and are equal as values (key order and spacing ignored)."""
    try:
        return float(json.loads(prediction) == json.loads(reference))
    except (json.JSONDecodeError, TypeError):
        return 0.0


SCORERS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "json_equal": json_equal,
}
