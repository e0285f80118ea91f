"""The model_refresh DAG on the embedded platform: Airflow's own runner, the local launcher,
real vLLM on the CPU, a real MLflow server and registry, a real S3 endpoint."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[2]


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "model_refresh.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["model_refresh"]


def test_refresh_promotes_blocks_canaries_and_rolls_back(airflow_db, platform, models_dir, vllm_runtime, publish,
                                                         approver, tmp_path: Path) -> None:
    from llmops.io import s3 as s3io
    from llmops.io.registry import ModelRegistry
    from llmops.refresh import lease

    model = f"refresh-{uuid.uuid4().hex[:8]}"
    registry = ModelRegistry(platform.endpoints.mlflow_url)
    dag = _dag()

    # A first model ever: qualified on absolute minimums, promoted at once (nothing to canary against).
    first = dag.test(run_conf={"model": model, "drop_uri": publish(models_dir / "good", model, "r1"),
                               "hardware_classes": ["cpu"]})
    assert first.state == "success"
    champion = registry.by_alias(model, "champion")
    assert champion is not None and champion.version == "1"
    assert champion.tags["llmops.status"] == "champion"
    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    current = s3io.read_json(s3, "llmops-models", f"deployments/{model}/current.json")
    assert current["version"] == "1" and current["pins"]["weight_digest"] == champion.weight_digest
    assert current["history"] == []

    # A degraded checkpoint (reverse answers broken) is blocked at the gate, naming the category.
    blocked = dag.test(run_conf={"model": model, "drop_uri": publish(models_dir / "degraded", model, "r2"),
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

    # A better checkpoint qualifies against the champion, is canaried through nginx and, with
    # require_approval, waits before its last step (parked, no worker slot) until a person approves
    # through Airflow's REST API (what the UI calls); then the canary resumes there and promotes.
    canary = {"canary_steps": [25, 50], "canary_window_s": 10}
    with approver("model_refresh", "approve_last_step") as approval:
        promoted = dag.test(run_conf={"model": model, "drop_uri": publish(models_dir / "better", model, "r3"),
                                      "hardware_classes": ["cpu"], "require_approval": True, **canary})
    states = {ti.task_id: ti.state for ti in promoted.get_task_instances()}
    assert promoted.state == "success", states
    assert approval.seen_waiting == ["awaiting_input"] and approval.answered[0]["chosen_options"] == ["Approve"]
    assert states["approve_last_step"] == states["canary_last_step"] == "success"
    assert states["restore_routing"] == states["release_model"] == "success"
    assert lease.read_lease(s3, "llmops-models", model) is None, "the teardown gives the model's lease back"
    assert registry.by_alias(model, "champion").version == "3"
    assert registry.by_alias(model, "previous").version == "1"
    current = s3io.read_json(s3, "llmops-models", f"deployments/{model}/current.json")
    assert current["version"] == "3" and [h["version"] for h in current["history"]] == ["1"]
    canary_runs = mlflow.search_runs(experiment_names=["llmops-refresh"], output_format="list",
                                     filter_string=f"tags.`llmops.stage` = 'canary' and tags.model = '{model}'")
    assert sorted(r.data.tags["outcome"] for r in canary_runs) == ["awaiting_approval", "promoted"]

    # The same weights repackaged (a new drop) with a canary config that breaks every request:
    # rolled back automatically to 0%, the version rejected, the champion untouched.
    repackaged = tmp_path / "repackaged"
    shutil.copytree(models_dir / "better", repackaged)
    (repackaged / "README.md").write_text("repackaged drop\n")
    # failure_limit 1: the first failing window aborts (with 2, a second window confirms the breach
    # first, and breach-to-rollback then includes that window).
    breached = dag.test(run_conf={"model": model, "drop_uri": publish(repackaged, model, "r4"),
                                  "hardware_classes": ["cpu"], "canary_vllm_args": ["--max-model-len", "16"],
                                  "canary_failure_limit": 1, **canary})
    assert breached.state == "failed"
    breached_states = {ti.task_id: ti.state for ti in breached.get_task_instances()}
    assert {task for task, state in breached_states.items() if state == "failed"} == {"check_canary"}
    # The teardowns ran although the run failed: routing back to the champion, the lease released.
    assert breached_states["restore_routing"] == breached_states["release_model"] == "success"
    assert breached_states["routing_restored"] == "success" and breached_states["promote"] == "upstream_failed"
    assert lease.read_lease(s3, "llmops-models", model) is None
    rejected = registry.get(model, "4")
    assert rejected.tags["llmops.status"] == "rejected"
    assert float(rejected.tags["llmops.breach_to_rollback_s"]) < 5
    assert "error_rate" in rejected.tags["llmops.canary_reasons"]
    assert registry.by_alias(model, "champion").version == "3"
