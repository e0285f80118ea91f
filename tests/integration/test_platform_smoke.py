"""The smoke DAG end to end on the embedded platform: Airflow's own runner, the local
launcher, real vLLM on the CPU, the eval job, a real MLflow server with S3 artifacts."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.vllm]


def _smoke_dag():
    from airflow.dag_processing.dagbag import DagBag

    from llmops.config.settings import PROJECT_ROOT

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "platform_smoke.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["platform_smoke"]


def test_smoke_dag_serves_evaluates_and_records_in_mlflow(airflow_db, platform, models_dir, vllm_runtime) -> None:
    import mlflow

    dag = _smoke_dag()
    run = dag.test(run_conf={"model_variant": "better", "limit_per_category": 10})
    assert run.state == "success", f"smoke run ended {run.state}"

    mlflow.set_tracking_uri(platform.endpoints.mlflow_url)
    runs = mlflow.search_runs(experiment_names=["llmops-smoke"],
                              filter_string=f"tags.airflow_run_id = '{run.run_id}'", output_format="list")
    assert len(runs) == 1, f"expected one MLflow run for {run.run_id}, found {len(runs)}"
    recorded = runs[0]
    assert recorded.data.tags["hardware_class"] == "cpu"
    assert recorded.data.tags["model_variant"] == "better"
    assert recorded.data.params["limit_per_category"] == "10"
    categories = {"arithmetic", "copy", "reverse", "json"}
    for category in categories:
        assert recorded.data.metrics[f"eval/{category}/n"] == 10
    # The better checkpoint answers most questions right through real vLLM (well above zero).
    assert recorded.data.metrics["eval/overall/accuracy"] >= 0.6
    low, high = (recorded.data.metrics["eval/overall/accuracy_ci_low"],
                 recorded.data.metrics["eval/overall/accuracy_ci_high"])
    assert low <= recorded.data.metrics["eval/overall/accuracy"] <= high
    # The per-item table went to the S3 endpoint through MLflow's artifact proxy.
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(recorded.info.run_id, "eval")]
    assert artifacts == ["eval/eval_results.json"]

