"""Defaults every DAG of the product shares (owner, retries, start date, tags).

Cheap to import: DAG files use it at parse time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

OWNER = "llmops"
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
BASE_TAGS = ("llmops",)


LIGHT_TASK_TIMEOUT = timedelta(minutes=20)
"""Bound of a task that runs in the worker itself (planning, a registry move, a verdict): light
I/O only, so 20 minutes means something hangs (an endpoint that never answers), not slowness."""

POD_TASK_OVERHEAD_S = 900
"""What a pod task may take beyond its pod job's own deadline (``timeout_s``): scheduling onto
a node, pulling images, and the launcher's clean-up. The pod's deadline bounds the work itself."""


def default_args(**overrides: Any) -> dict[str, Any]:
    """Task defaults: at least two retries with backoff, so a preempted pod or a flaky
    endpoint does not fail a pipeline; tasks that must not retry override it explicitly.
    Every task is bounded (``execution_timeout``): light tasks by :data:`LIGHT_TASK_TIMEOUT`,
    pod tasks by their pod job's deadline (see :func:`pod_task_timeout`), sensors by their own
    timeout; a task that hangs fails and is retried instead of holding its slot forever."""
    return {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": LIGHT_TASK_TIMEOUT,
        **overrides,
    }


def pod_task_timeout(pod_timeout_s: int) -> timedelta:
    """``execution_timeout`` of a task running a pod job whose deadline is ``pod_timeout_s``."""
    if pod_timeout_s <= 0:
        raise ValueError(f"pod deadline {pod_timeout_s!r} s: expected a positive number of seconds")
    return timedelta(seconds=int(pod_timeout_s) + POD_TASK_OVERHEAD_S)


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
