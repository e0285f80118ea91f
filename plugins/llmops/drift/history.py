"""MLflow I/O of the drift pipeline: weekly eval runs, per-item results, qualification baselines.

Weekly eval runs live in experiment ``llmops-eval-drift``, written by the refresh pipeline's own
eval job (:mod:`llmops.jobs.evaluate`) with these tags: ``llmops.stage=weekly_eval``, ``model``
(registered model), ``model_version``, ``alias`` (champion / previous), ``week`` (ISO week),
``evalset`` and ``evalset_revision`` (the eval set's content hash). Metrics are the eval job's
``eval/<category>/accuracy`` with ``_ci_low``/``_ci_high`` and ``eval/<category>/n``; per-item
results are its ``eval/eval_results.json`` artifact.

A version's **qualification baseline** is the refresh pipeline's qualify run of that version
as the candidate (experiment ``llmops-refresh``, tags ``llmops.stage=qualify``, ``role=candidate``,
``model``, ``model_version``, ``evalset``), preferring one on the same hardware class.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops.drift.series import CategoryScore, ItemOutcome, SeriesError, WeeklyEval, iso_week

log = logging.getLogger(__name__)

EXPERIMENT = "llmops-eval-drift"
QUALIFY_EXPERIMENT = "llmops-refresh"
STAGE_TAG = "llmops.stage"
WEEKLY_STAGE = "weekly_eval"
REPORT_STAGE = "drift_report"
RESULTS_ARTIFACT = "eval/eval_results.json"
_MAX_RUNS = 2000


def scores_from_metrics(metrics: Mapping[str, float], metric: str = "accuracy") -> dict[str, CategoryScore]:
    """Per-category scores from the eval job's metric names (``eval/<category>/<metric>`` and companions)."""
    scores: dict[str, CategoryScore] = {}
    for name, value in metrics.items():
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != "eval" or parts[2] != metric:
            continue
        category = parts[1]
        base = f"eval/{category}/{metric}"
        scores[category] = CategoryScore(mean=float(value), ci_low=float(metrics.get(f"{base}_ci_low", value)),
                                         ci_high=float(metrics.get(f"{base}_ci_high", value)),
                                         n=int(metrics.get(f"eval/{category}/n", 0)))
    return scores


def items_from_rows(rows: list[dict[str, Any]], prompts: Mapping[str, str] | None = None) -> tuple[ItemOutcome, ...]:
    """Per-item outcomes from ``eval_results.json`` rows (prompts joined by item id where known)."""
    prompts = prompts or {}
    return tuple(ItemOutcome(id=str(r["id"]), category=str(r["category"]), score=float(r["score"]),
                             reference=str(r.get("reference", "")), prediction=str(r.get("prediction") or ""),
                             error=r.get("error"), prompt=prompts.get(str(r["id"]), "")) for r in rows)


def weekly_eval_from_run(run: Any, *, alias: str | None = None, week: str | None = None,
                         items: tuple[ItemOutcome, ...] = ()) -> WeeklyEval:
    """A :class:`WeeklyEval` from an MLflow run (tags as the module describes)."""
    tags = run.data.tags
    started = (run.info.start_time or 0) / 1000.0
    return WeeklyEval(
        week=week or tags.get("week") or iso_week(datetime.fromtimestamp(started, UTC)),
        model=tags.get("model", ""), alias=alias or tags.get("alias", ""), version=tags.get("model_version", "?"),
        evalset=tags.get("evalset", ""), evalset_revision=tags.get("evalset_revision", ""), run_id=run.info.run_id,
        scores=scores_from_metrics(run.data.metrics), items=items, started_at=started)


class DriftHistory:
    """Reads weekly evals and baselines from one MLflow tracking server."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = EXPERIMENT,
                 qualify_experiment: str = QUALIFY_EXPERIMENT) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.qualify_experiment = qualify_experiment

    def _experiment_id(self, name: str) -> str | None:
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else None

    def run(self, run_id: str, *, with_items: bool = False, prompts: Mapping[str, str] | None = None) -> WeeklyEval:
        """One weekly eval run by id (with its per-item results when asked)."""
        run = self.client.get_run(run_id)
        items = self.items(run_id, prompts) if with_items else ()
        return weekly_eval_from_run(run, items=items)

    def items(self, run_id: str, prompts: Mapping[str, str] | None = None) -> tuple[ItemOutcome, ...]:
        """The per-item results of an eval run (``eval/eval_results.json``)."""
        import mlflow

        if self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=RESULTS_ARTIFACT)
        return items_from_rows(json.loads(Path(path).read_text()), prompts)

    def weekly_runs(self, model: str) -> list[WeeklyEval]:
        """Every weekly eval of ``model`` (any alias, eval set, week), newest first, without items."""
        experiment_id = self._experiment_id(self.experiment)
        if experiment_id is None:
            return []
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{STAGE_TAG}` = '{WEEKLY_STAGE}' and tags.model = '{model}' "
                                           "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=_MAX_RUNS)
        found = []
        for run in runs:
            try:
                found.append(weekly_eval_from_run(run))
            except SeriesError as exc:  # a run tagged by hand or by an older job: not part of any series
                log.warning("weekly eval run %s skipped: %s", run.info.run_id, exc)
        return found

    def qualification_baseline(self, model: str, version: str, evalset: str, hardware_class: str | None,
                               prompts: Mapping[str, str] | None = None) -> WeeklyEval | None:
        """The qualify run of ``version`` as the candidate on ``evalset`` (same hardware class first)."""
        experiment_id = self._experiment_id(self.qualify_experiment)
        if experiment_id is None:
            return None
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{STAGE_TAG}` = 'qualify' and tags.model = '{model}' and "
                                           f"tags.model_version = '{version}' and tags.role = 'candidate' and "
                                           f"tags.evalset = '{evalset}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=50)
        if not runs:
            return None
        same_class = [r for r in runs if r.data.tags.get("hardware_class") == hardware_class]
        chosen = (same_class or runs)[0]
        return weekly_eval_from_run(chosen, alias="qualify", items=self.items(chosen.info.run_id, prompts))
