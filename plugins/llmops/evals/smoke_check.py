"""Checks of the platform smoke DAG (I/O against MLflow, kept out of the DAG file)."""

from __future__ import annotations

from typing import Any


class SmokeCheckFailed(RuntimeError):
    """The smoke run did not leave what it should have in MLflow."""


def verify_eval_run(result: dict[str, Any]) -> dict[str, Any]:
    """Fetch the eval job's MLflow run and check it holds a metric per category it scored."""
    import mlflow
    from airflow.sdk import BaseHook

    run_id = result.get("mlflow_run_id")
    if not run_id:
        raise SmokeCheckFailed(f"the eval job recorded no MLflow run (result: {result})")
    mlflow.set_tracking_uri(BaseHook.get_connection("llmops_mlflow").host)
    run = mlflow.get_run(run_id)
    expected = {f"eval/{category}/accuracy" for category in result["scores"]}
    missing = sorted(expected - set(run.data.metrics))
    if missing:
        raise SmokeCheckFailed(f"MLflow run {run_id} lacks metrics {missing}")
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "eval")]
    if "eval/eval_results.json" not in artifacts:
        raise SmokeCheckFailed(f"MLflow run {run_id} lacks the per-item results artifact (has {artifacts})")
    return {"mlflow_run_id": run_id, "status": run.info.status,
            "overall": run.data.metrics.get("eval/overall/accuracy"), "artifacts": artifacts}
