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


# Bounds on what a user types into a trigger form (Params): every free-text value has a length
# limit and every list a size limit, so a run's conf (stored in the metadata DB, rendered into
# pod specs, logged) cannot be made arbitrarily large. A pod spec's args are limited anyway.
URI_MAX_LENGTH = 1024
"""S3 allows keys of 1,024 bytes; no URI a DAG takes needs more."""
ARG_MAX_LENGTH = 256
"""One extra command-line flag (``--name=value``) from a Param."""
ARGS_MAX_ITEMS = 32
"""Extra command-line flags from one Param."""
NAME_MAX_LENGTH = 128
"""A category, eval-set or other short name from a Param."""
NAMES_MAX_ITEMS = 64
"""Names in one list Param."""


def tags(*extra: str) -> list[str]:
    """The product tag plus the pipeline's own."""
    return [*BASE_TAGS, *extra]
