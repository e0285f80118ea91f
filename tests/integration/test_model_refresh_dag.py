"""The model_refresh DAG on the embedded platform: Airflow's own runner, the local launcher,
real vLLM on the CPU, a real MLflow server and registry, a real S3 endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[2]
PINNED_VLLM_IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "5e" * 32


def _publish(checkpoint: Path, model: str, revision: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "LLMOPS_VLLM_IMAGE": PINNED_VLLM_IMAGE,
           "LLMOPS_XCOM_DIR": str(Path(os.environ["LLMOPS_DATA_DIR"]) / "publish" / revision)}
    subprocess.run([sys.executable, "-m", "llmops.jobs.publish_drop", str(checkpoint), "--model", model,
                    "--revision", revision, "--exclude", "maker.json"], check=True, env=env, cwd=ROOT,
                   capture_output=True)
    return f"s3://llmops-drops/{model}/{revision}/"


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "model_refresh.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["model_refresh"]


def test_first_drop_is_promoted_and_a_degraded_drop_is_blocked_at_qualify(airflow_db, platform, models_dir,
                                                                         vllm_runtime) -> None:
    from llmops import storage
    from llmops.embedded import s3state
    from llmops.registry import ModelRegistry

    model = f"refresh-{uuid.uuid4().hex[:8]}"
    registry = ModelRegistry(platform.endpoints.mlflow_url)
    dag = _dag()

    # A first model ever: qualified on absolute minimums, promoted at once (nothing to canary against).
    first = dag.test(run_conf={"model": model, "drop_uri": _publish(models_dir / "good", model, "r1"),
                               "hardware_classes": ["cpu"]})
    assert first.state == "success"
    champion = registry.by_alias(model, "champion")
    assert champion is not None and champion.version == "1"
    assert champion.tags["llmops.status"] == "champion"
    s3 = s3state.client(platform.endpoints.s3_url)
    current = storage.read_json(s3, "llmops-models", f"deployments/{model}/current.json")
    assert current["version"] == "1" and current["pins"]["weight_digest"] == champion.weight_digest
    assert current["history"] == []

    # A degraded checkpoint (reverse answers broken) is blocked at the gate, naming the category.
    blocked = dag.test(run_conf={"model": model, "drop_uri": _publish(models_dir / "degraded", model, "r2"),
                                 "hardware_classes": ["cpu"]})
    assert blocked.state == "failed"
    failed = {ti.task_id for ti in blocked.get_task_instances() if ti.state == "failed"}
    assert failed == {"gate"}, failed
    candidate = registry.get(model, "2")
    assert candidate.tags["llmops.status"] == "rejected"
    assert "'reverse'" in candidate.tags["llmops.gate_reasons"]
    assert "'copy'" not in candidate.tags["llmops.gate_reasons"]
    assert registry.by_alias(model, "champion").version == "1", "the champion must be untouched"

    # The verdict is readable in MLflow: a gate run with the per-category deltas and a Markdown table.
    import mlflow

    mlflow.set_tracking_uri(platform.endpoints.mlflow_url)
    gate_runs = mlflow.search_runs(experiment_names=["llmops-refresh"], output_format="list",
                                   filter_string=f"tags.`llmops.stage` = 'gate' and tags.model = '{model}' "
                                                 f"and tags.model_version = '2'")
    assert len(gate_runs) == 1
    assert gate_runs[0].data.metrics["delta/reverse"] < -0.5
    verdict = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=gate_runs[0].info.run_id,
                                                                  artifact_path="gate/verdict.json")).read_text())
    assert verdict["passed"] is False
