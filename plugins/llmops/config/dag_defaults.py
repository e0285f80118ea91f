"""Defaults every DAG of the product shares (owner, retries, start date, tags).

Cheap to import: DAG files use it at parse time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

OWNER = "llmops"
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
BASE_TAGS = ("llmops",)


def default_args(**overrides: Any) -> dict[str, Any]:
    """Task defaults: at least two retries with backoff, so a preempted pod or a flaky
    endpoint does not fail a pipeline; tasks that must not retry override it explicitly."""
    return {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        **overrides,
    }


def tags(*extra: str) -> list[str]:
    """The product tag plus the pipeline's own."""
    return [*BASE_TAGS, *extra]
