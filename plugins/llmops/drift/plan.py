"""Task logic of the ``weekly_eval_drift`` DAG that runs inside Airflow (light I/O, no heavy work).

Plans the pod jobs from run-time facts (the registry's ``champion`` and ``previous``, the
eval sets that passed hygiene, the run's ISO week) and turns the report job's result into
the final check. Evaluating and reporting run in pod jobs.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from llmops.config.settings import Settings
from llmops.core.hardware import HardwareClass
from llmops.core.job_container import jobs_container
from llmops.core.podjob import PodJob, Resources, literal_template
from llmops.drift.history import EXPERIMENT, STAGE_TAG, WEEKLY_STAGE
from llmops.drift.series import iso_week
from llmops.evals.eval_job import evaluation_pod_job
from llmops.io import registry

EVALSETS_DIR = "include/evalsets"


class NoChampion(RuntimeError):
    """The registry has no champion to evaluate; the message says how to get one."""


class DriftAlert(RuntimeError):
    """The week's report flagged drift; the message lists what drifted, by how much, since when."""


REPORT_TIMEOUT_S = 1800
"""Deadline of the report pod (history from MLflow, charts, the HTML page)."""

def week_of(logical_date: datetime | None, run_after: datetime) -> str:
    """The ISO week a run reports on: its logical date's week (a manual run: the week it runs in)."""
    return iso_week(logical_date or run_after)


def hygiene_job(settings: Settings) -> PodJob:
    """Check the eval sets selected by ``params.evalsets`` (all when empty) before anything is served."""
    return PodJob(name="drift-hygiene", main=jobs_container(
        settings, "drift_hygiene",
        ["--evalsets-dir", EVALSETS_DIR, "--only", literal_template("params.evalsets | join(',')")],
        resources=Resources(cpu="1", memory="1Gi")), timeout_s=600)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def targets(reg: registry.ModelRegistry, model: str, tracking_uri: str) -> list[dict[str, str]]:
    """``champion`` (required) and ``previous`` (when it exists and differs) as eval targets."""
    from llmops.serving.weights import champion_target, version_target

    champion = champion_target(reg, model)
    if champion is None:
        raise NoChampion(
            f"model {model!r} has no 'champion' alias in the MLflow registry at {tracking_uri}: there is no "
            "production model to re-evaluate. Fix: promote one first (trigger model_refresh with a weight drop, "
            "or on the embedded platform run `make run` / `python -m llmops.embedded refresh-demo`), or set the "
            "'model' param to a registered model that has a champion")
    found = [{**champion, "alias": registry.CHAMPION}]
    previous = reg.by_alias(model, registry.PREVIOUS)
    if previous is not None and previous.version != champion["version"] and previous.weight_digest:
        found.append({**version_target("previous", previous), "alias": registry.PREVIOUS})
    return found


def evaluation_jobs(settings: Settings, hw: HardwareClass, *, model: str, targets: list[dict[str, str]],
                    evalsets: list[dict[str, Any]], week: str, limit_per_category: int, s3_endpoint: str | None,
                    tracking_uri: str, airflow_run_id: str) -> list[dict[str, Any]]:
    """One serving + eval pod job per (model alias, eval set): the refresh pipeline's eval job.

    Each pod fetches the alias's pinned weights (init container, digest re-verified) and serves
    them with vLLM; the eval job logs to ``llmops-eval-drift`` with the tags the history reads.
    """
    from llmops.serving.weights import fetch_container, model_dir

    jobs = []
    for target in targets:
        for evalset in evalsets:
            job = evaluation_pod_job(
                settings, hw, name=f"drift-{target['alias']}-{_slug(evalset['name'])}"[:63].rstrip("-"),
                model_path=model_dir(model, target["weight_digest"]),
                served_model_name=f"{model}-v{target['version']}", evalset=evalset["config"], experiment=EXPERIMENT,
                vllm_image=target["runtime_image"], runtime_version=target.get("runtime_version", ""),
                limit_per_category=str(limit_per_category),
                tags={"model": model, "model_version": target["version"], "alias": target["alias"], "week": week,
                      STAGE_TAG: WEEKLY_STAGE, "airflow_run_id": airflow_run_id,
                      "pinned_hardware_config_hash": target.get(f"hardware_config.{hw.name}", "none")},
                mlflow_tracking_uri=tracking_uri)
            fetch = fetch_container(settings, target, model, s3_endpoint)
            jobs.append(replace(job, init_containers=(fetch,)).to_dict())
    return jobs


def report_job(settings: Settings, *, model: str, week: str, evaluations: list[dict[str, Any]],
               evalsets: list[dict[str, Any]], weeks: int, threshold: float, fail_on: str, categories: list[str],
               hardware_class: str, tracking_uri: str, airflow_run_id: str) -> dict[str, Any]:
    """The report pod job over this week's eval results (values final: mapped jobs are not templated)."""
    compact = [{k: e.get(k) for k in ("mlflow_run_id", "evalset", "evalset_revision", "tags")} for e in evaluations]
    args = ["--model", model, "--week", week, "--evaluations", json.dumps(compact), "--evalsets", json.dumps(evalsets),
            "--weeks", str(weeks), "--threshold", str(threshold), "--fail-on", fail_on,
            "--categories", ",".join(categories), "--hardware-class", hardware_class,
            "--tag", f"airflow_run_id={airflow_run_id}"]
    container = jobs_container(settings, "drift_report", args, resources=Resources(cpu="1", memory="2Gi"),
                                       mlflow_tracking_uri=tracking_uri)
    return PodJob(name="drift-report", main=container, timeout_s=REPORT_TIMEOUT_S).to_dict()


def check(result: dict[str, Any] | None) -> dict[str, Any]:
    """The final check: raise :class:`DriftAlert` when the report flagged drift (it is written by then)."""
    if not result:
        raise DriftAlert("the report job returned no result: no report was written")
    if result.get("drift_detected"):
        lines = "\n".join(f"- {a}" for a in result.get("alerts", []))
        raise DriftAlert(f"eval drift for {result.get('model')} in {result.get('week')} "
                         f"(report: MLflow run {result.get('report_run_id')}, drift/report.html):\n{lines}")
    return result
