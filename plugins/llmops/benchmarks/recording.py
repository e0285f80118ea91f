"""MLflow I/O of the benchmarks: record each (class, model, workload) run, read a class's history,
judge the night with the pure :mod:`llmops.benchmarks.regression`, log the summary artifacts.

One MLflow run per (hardware class, model version, workload) in experiment
``llmops-benchmarks``, tagged so a class's history is one search away::

    llmops.pipeline=benchmarks  llmops.hardware_class=cpu  llmops.config_hash=<sha256>
    llmops.model_key=sha256:<weights> | path:<default model>  llmops.workload=in32-out16-rateinf-c16
    llmops.workload_hash=<sha256>  llmops.runtime=<vllm version>@<image>  llmops.what_if=false

Metrics under ``bench/`` (:mod:`llmops.benchmarks.metrics`); params: config hash, runtime
version, image and digest, the workload, the SLOs, vLLM overrides. Recording is idempotent per
Airflow run (a retried task finds its runs by ``airflow_run_id`` and does not log them twice).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmops.benchmarks import metrics as metric_names
from llmops.benchmarks.regression import Policy, Sample, judge
from llmops.benchmarks.report import Row, html_table, markdown_table, outcome, render_chart
from llmops.config.images import image_digest

EXPERIMENT = "llmops-benchmarks"
HISTORY_LIMIT = 200
KIND_WORKLOAD = "workload"
KIND_SUMMARY = "summary"


def _tag(name: str) -> str:
    return f"llmops.{name}"


def runtime_id(version: str, image: str) -> str:
    """What served the run: the vLLM version and the image (its digest when pinned)."""
    return f"{version}@{image_digest(image) or image}"


def run_tags(result: Mapping[str, Any], entry: Mapping[str, Any], *, airflow_run_id: str,
             trigger: str) -> dict[str, str]:
    """The tags of one workload's run (see the module docstring)."""
    target = result.get("target") or {}
    overrides = result.get("vllm_overrides") or []
    tags = {
        _tag("pipeline"): "benchmarks", _tag("kind"): KIND_WORKLOAD,
        _tag("hardware_class"): str(result["hardware_class"]), _tag("config_hash"): str(result["config_hash"]),
        _tag("model"): str(target.get("model", "")), _tag("model_version"): str(target.get("version", "")),
        _tag("model_key"): str(target.get("model_key", "")), _tag("role"): str(target.get("role", "")),
        _tag("workload"): str(entry["name"]), _tag("workload_hash"): str(entry["workload_hash"]),
        _tag("runtime"): runtime_id(str(result.get("runtime_version", "")), str(result.get("runtime_image", ""))),
        _tag("what_if"): "true" if overrides else "false", _tag("status"): str(entry["status"]),
        # A registered version runs on its pinned runtime: a change of it is a qualified pin move.
        _tag("runtime_pinned"): "true" if target.get("runtime_image") else "false",
        _tag("trigger"): trigger, "airflow_run_id": airflow_run_id,
    }
    if target.get("role") == "default":
        tags[_tag("model_source")] = ("default: the registry has no champion, so the configured default "
                                      f"checkpoint {target.get('model_path')} was benchmarked")
    else:
        tags[_tag("model_source")] = f"registry alias {target.get('role')}"
    if entry.get("error"):
        tags[_tag("error")] = str(entry["error"])[:4000]
    return tags


def run_params(result: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, str]:
    """The params of one workload's run: what it ran on and with."""
    image = str(result.get("runtime_image", ""))
    params = {
        "config_hash": str(result["config_hash"]), "runtime_version": str(result.get("runtime_version", "")),
        "runtime_image": image, "runtime_image_digest": image_digest(image),
        "served_model": str(result.get("served_model", "")),
        "vllm_overrides": json.dumps(result.get("vllm_overrides") or []),
        "goodput_slo_ms": json.dumps(result.get("goodput_slo_ms") or {}, sort_keys=True),
        "workload_hash": str(entry["workload_hash"]),
    }
    params.update({f"workload.{k}": str(v) for k, v in (entry.get("workload") or {}).items()})
    return params


def run_metrics(entry: Mapping[str, Any]) -> dict[str, float]:
    """``bench/<name>`` metrics of one workload's parsed result."""
    return {metric_names.mlflow_key(name): float(value) for name, value in (entry.get("metrics") or {}).items()
            if name in metric_names.BY_NAME and isinstance(value, (int, float)) and math.isfinite(value)}


def record(results: Sequence[Mapping[str, Any]], *, tracking_uri: str | None, airflow_run_id: str,
           trigger: str = "manual", experiment: str = EXPERIMENT) -> list[dict[str, Any]]:
    """Log one MLflow run per workload of each pod result; returns ``[{run_id, tags, metrics, ...}]``."""
    import mlflow

    from llmops.io import tracking

    experiment_id = tracking.configure(tracking_uri, experiment)
    client = mlflow.MlflowClient()
    existing = {
        (r.data.tags.get(_tag("hardware_class")), r.data.tags.get(_tag("model_key")),
         r.data.tags.get(_tag("workload"))): r.info.run_id
        for r in client.search_runs([experiment_id], f"tags.airflow_run_id = '{airflow_run_id}' and "
                                                     f"tags.`{_tag('kind')}` = '{KIND_WORKLOAD}'", max_results=1000)
    }
    recorded = []
    for result in results:
        for entry in result.get("workloads", []):
            tags = run_tags(result, entry, airflow_run_id=airflow_run_id, trigger=trigger)
            key = (tags[_tag("hardware_class")], tags[_tag("model_key")], tags[_tag("workload")])
            run_id = existing.get(key)
            if run_id is None:
                run_id = _log_run(client, experiment_id, result, entry, tags)
            recorded.append({"run_id": run_id, "tags": tags, "metrics": dict(entry.get("metrics") or {}),
                             "status": entry["status"], "error": entry.get("error"),
                             "started_at": float(client.get_run(run_id).info.start_time)})
    return recorded


def _log_run(client: Any, experiment_id: str, result: Mapping[str, Any], entry: Mapping[str, Any],
             tags: dict[str, str]) -> str:
    run_name = f"{tags[_tag('hardware_class')]}-{tags[_tag('model')]}-v{tags[_tag('model_version')]}-{entry['name']}"
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    from mlflow.entities import Metric, Param

    now = run.info.start_time
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in run_metrics(entry).items()],
                     params=[Param(k, v[:6000]) for k, v in run_params(result, entry).items()])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{entry['name']}.json"
        path.write_text(json.dumps({"summary": entry.get("summary"), "workload": entry.get("workload"),
                                    "goodput_recomputed": entry.get("goodput_recomputed"),
                                    "error": entry.get("error")}, indent=1, default=str))
        client.log_artifact(run_id, str(path), artifact_path="bench")
    client.set_terminated(run_id, status="FINISHED" if entry["status"] == "ok" else "FAILED")
    return run_id


def history(client: Any, experiment_id: str, *, hardware_class: str, model_key: str,
            workload: str) -> list[Sample]:
    """Earlier successful, non-what-if runs of (class, model, workload), newest first, as samples."""
    filter_string = (f"tags.`{_tag('pipeline')}` = 'benchmarks' and tags.`{_tag('kind')}` = '{KIND_WORKLOAD}' and "
                     f"tags.`{_tag('hardware_class')}` = '{hardware_class}' and "
                     f"tags.`{_tag('model_key')}` = '{model_key}' and tags.`{_tag('workload')}` = '{workload}' and "
                     f"tags.`{_tag('what_if')}` = 'false' and tags.`{_tag('status')}` = 'ok' and "
                     "attributes.status = 'FINISHED'")
    runs = client.search_runs([experiment_id], filter_string, max_results=HISTORY_LIMIT,
                              order_by=["attributes.start_time DESC"])
    return [sample_from_run(r) for r in runs]


def sample_from_run(run: Any) -> Sample:
    """An MLflow run as a :class:`Sample` (metrics without the ``bench/`` prefix)."""
    prefix = metric_names.PREFIX
    return Sample(run_id=run.info.run_id, started_at=float(run.info.start_time),
                  config_hash=run.data.tags.get(_tag("config_hash"), ""),
                  workload_hash=run.data.tags.get(_tag("workload_hash"), ""),
                  runtime=run.data.tags.get(_tag("runtime"), ""),
                  runtime_pinned=run.data.tags.get(_tag("runtime_pinned")) == "true",
                  metrics={k.removeprefix(prefix): v for k, v in run.data.metrics.items() if k.startswith(prefix)})


def judge_night(recorded: Sequence[Mapping[str, Any]], policies: Mapping[str, Policy], *,
                tracking_uri: str | None, experiment: str = EXPERIMENT) -> list[Row]:
    """Judge every recorded run against its own (class, model, workload) history."""
    import mlflow

    from llmops.io import tracking

    experiment_id = tracking.configure(tracking_uri, experiment)
    client = mlflow.MlflowClient()
    rows = []
    for rec in recorded:
        tags = rec["tags"]
        hw_name, model = tags[_tag("hardware_class")], f"{tags[_tag('model')]}@{tags[_tag('model_version')]}"
        if rec["status"] != "ok":
            rows.append(Row(hw_name, model, tags[_tag("workload")], "failed", error=rec.get("error"),
                            mlflow_run_id=rec["run_id"]))
            continue
        current = Sample(run_id=rec["run_id"], started_at=rec["started_at"], config_hash=tags[_tag("config_hash")],
                         workload_hash=tags[_tag("workload_hash")], runtime=tags[_tag("runtime")],
                         runtime_pinned=tags.get(_tag("runtime_pinned")) == "true", metrics=rec["metrics"])
        past = history(client, experiment_id, hardware_class=hw_name, model_key=tags[_tag("model_key")],
                       workload=tags[_tag("workload")])
        verdict = judge(current, past, policies.get(hw_name, Policy()))
        if tags[_tag("what_if")] == "true":
            verdict_extra = {"what_if": True}
        else:
            verdict_extra = {}
        data = {**verdict.to_dict(), **verdict_extra}
        client.set_tag(rec["run_id"], _tag("verdict"), verdict.status)
        client.set_tag(rec["run_id"], _tag("verdict_reasons"), "; ".join(verdict.reasons)[:4000] or "-")
        rows.append(Row(hw_name, model, tags[_tag("workload")], verdict.status, verdict=data,
                        current=rec["metrics"], mlflow_run_id=rec["run_id"]))
    return rows


def log_summary(rows: Sequence[Row], failed_targets: Sequence[Mapping[str, str]], *, tracking_uri: str | None,
                airflow_run_id: str, trigger: str, experiment: str = EXPERIMENT) -> dict[str, Any]:
    """One summary run per night: the ratio table (Markdown + HTML), the chart, every verdict as JSON."""
    import mlflow

    from llmops.io import tracking

    experiment_id = tracking.configure(tracking_uri, experiment)
    client = mlflow.MlflowClient()
    result = outcome(rows, failed_targets)
    existing = client.search_runs([experiment_id], f"tags.airflow_run_id = '{airflow_run_id}' and "
                                                   f"tags.`{_tag('kind')}` = '{KIND_SUMMARY}'", max_results=1)
    run = existing[0] if existing else client.create_run(
        experiment_id, run_name=f"summary-{airflow_run_id}",
        tags={_tag("pipeline"): "benchmarks", _tag("kind"): KIND_SUMMARY, "airflow_run_id": airflow_run_id,
              _tag("trigger"): trigger})
    run_id = run.info.run_id
    client.set_tag(run_id, _tag("outcome"), "passed" if result.passed else "failed")
    client.set_tag(run_id, _tag("outcome_message"), result.message()[:4000])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "summary.md").write_text("# Benchmark ratios (current / baseline)\n\n" + markdown_table(rows)
                                           + "\n" + result.message() + "\n")
        (folder / "summary.html").write_text(html_table(rows))
        (folder / "verdicts.json").write_text(json.dumps({"rows": [r.to_dict() for r in rows],
                                                          "failed_targets": list(failed_targets)},
                                                         indent=1, default=str))
        render_chart(rows, str(folder / "ratios.png"))
        for name in ("summary.md", "summary.html", "verdicts.json", "ratios.png"):
            client.log_artifact(run_id, str(folder / name), artifact_path="summary")
    client.set_terminated(run_id, status="FINISHED")
    return {"summary_run_id": run_id, "passed": result.passed, "message": result.message(),
            "regressions": list(result.regressions), "failures": list(result.failures),
            "new_baselines": list(result.new_baselines), "insufficient_history": list(result.insufficient),
            "rows": [r.to_dict() for r in rows]}
