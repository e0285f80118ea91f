"""MLflow tracking I/O shared by jobs: where runs go and how metrics are named.

Metric names are stable so the MLflow UI charts the same series over time:
``eval/<category>/<metric>`` with ``_ci_low`` / ``_ci_high`` companions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class ScoreEstimate(Protocol):
    """A score with its interval, as :class:`llmops.evals.stats.ScoreEstimate` has it."""

    mean: float
    ci_low: float
    ci_high: float
    n: int


def eval_metrics(scores: Mapping[str, ScoreEstimate], metric: str = "accuracy") -> dict[str, float]:
    """Flatten per-category estimates into MLflow metric names."""
    metrics: dict[str, float] = {}
    for category, estimate in scores.items():
        base = f"eval/{category}/{metric}"
        metrics[base] = estimate.mean
        metrics[f"{base}_ci_low"] = estimate.ci_low
        metrics[f"{base}_ci_high"] = estimate.ci_high
        metrics[f"eval/{category}/n"] = float(estimate.n)
    return metrics


def configure(tracking_uri: str | None, experiment: str) -> str:
    """Point MLflow at ``tracking_uri`` and make sure ``experiment`` exists; return its id."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(experiment)


def tag_filter(tags: Mapping[str, str]) -> str:
    """An MLflow search filter matching every tag in ``tags`` exactly (values quoted safely)."""
    def quoted(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " and ".join(f"tags.`{key}` = {quoted(value)}" for key, value in tags.items())


def finished_run(experiment_id: str, tags: Mapping[str, str]) -> str | None:
    """The id of a FINISHED run of ``experiment_id`` carrying every tag in ``tags``, or None.

    How a retried task finds the record its first attempt completed, so it writes no second one.
    """
    from mlflow.tracking import MlflowClient

    query = " and ".join(filter(None, [tag_filter(tags), "attributes.status = 'FINISHED'"]))
    found = MlflowClient().search_runs([experiment_id], filter_string=query, max_results=1)
    return found[0].info.run_id if found else None
