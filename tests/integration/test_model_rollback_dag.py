"""model_rollback restores the previous champion in one run, recorded with its history."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Each version pinned to its own runtime: a rollback must serve the previous version's, not the latest.
IMAGES = {"a": "docker.io/vllm/vllm-openai@sha256:" + "a" * 64, "b": "docker.io/vllm/vllm-openai@sha256:" + "b" * 64}


def test_rollback_moves_champion_back_and_keeps_history(airflow_db, platform) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from llmops.config import settings
    from llmops.io import s3 as s3io
    from llmops.io.registry import ModelRegistry
    from llmops.refresh import actions
    from tests.staged import stage_version

    model = f"rollback-{uuid.uuid4().hex[:8]}"
    reg = ModelRegistry(platform.endpoints.mlflow_url)
    conf = settings.load()
    s3_url = platform.endpoints.s3_url
    s3 = s3io.client(endpoint_url=s3_url)
    for digest in ("a" * 64, "b" * 64):
        version = stage_version(reg, s3, "llmops-models", model, digest, IMAGES[digest[0]])
        actions.promote(conf, model=model, version=version, run_id=f"promote-{version}",
                        tracking_uri=platform.endpoints.mlflow_url,
                        models_bucket="llmops-models")
    assert reg.by_alias(model, "champion").version == "2" and reg.by_alias(model, "previous").version == "1"

    bag = DagBag(dag_folder=str(ROOT / "dags" / "model_rollback.py"))
    run = bag.dags["model_rollback"].test(run_conf={"model": model})
    assert run.state == "success"
    [ti] = run.get_task_instances()
    served = ti.xcom_pull(task_ids="rollback")["serving"]
    # The previous version's pinned render, applied (on the embedded default: to the local store).
    assert served["action"] == "applied_stable" and served["router"] == "nginx" and served["version"] == "1"
    from llmops.serving.objects import serving_objects

    deployment = serving_objects(conf).get("Deployment", f"{model}-stable")
    assert deployment is not None
    assert {c["name"]: c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}["vllm"] == IMAGES["a"]
    assert reg.by_alias(model, "champion").version == "1"
    assert reg.by_alias(model, "previous").version == "2"
    assert reg.get(model, "2").tags["llmops.status"] == "rolled_back"

    s3 = s3io.client(endpoint_url=s3_url)
    current = s3io.read_json(s3, "llmops-models", f"deployments/{model}/current.json")
    assert current["version"] == "1" and current["action"] == "rollback"
    assert [h["version"] for h in current["history"]] == ["2", "1"]
    assert current["pins"]["weight_digest"] == "a" * 64

    # A retry of the same run does not roll back a second time.
    actions.rollback(conf, model=model, run_id=run.run_id, tracking_uri=platform.endpoints.mlflow_url,
                     models_bucket="llmops-models")
    assert reg.by_alias(model, "champion").version == "1"
    # ...and its history is the same: one entry per action, one history object per action.
    assert s3io.read_json(s3, "llmops-models", f"deployments/{model}/current.json") == current
    history = s3io.list_prefix(s3, "llmops-models", f"deployments/{model}/history/")
    assert len(history) == 3, history  # promote v1, promote v2, rollback


def test_retried_promote_and_rollback_leave_one_history_entry_each(platform) -> None:
    """A task retried after its writes went through (worker lost before success was recorded)
    converges on the first attempt's state: no duplicate history entry or object, no second move."""
    from llmops.config import settings
    from llmops.io import s3 as s3io
    from llmops.io.registry import ModelRegistry
    from llmops.refresh import actions
    from tests.staged import stage_version

    model = f"retry-{uuid.uuid4().hex[:8]}"
    reg = ModelRegistry(platform.endpoints.mlflow_url)
    conf = settings.load()
    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    kwargs = {"tracking_uri": platform.endpoints.mlflow_url, "models_bucket": "llmops-models"}
    for digest in ("d" * 64, "e" * 64):
        version = stage_version(reg, s3, "llmops-models", model, digest, IMAGES["a"])
        for _attempt in range(2):  # the task, then its retry
            actions.promote(conf, model=model, version=version, run_id=f"run-promote-{version}",
                            **kwargs)
    current = s3io.read_json(s3, "llmops-models", f"deployments/{model}/current.json")
    assert (current["version"], [h["version"] for h in current["history"]]) == ("2", ["1"])
    assert reg.by_alias(model, "previous").version == "1"

    # A rollback that died between its two alias moves (champion moved, previous not yet), then retried.
    from llmops.refresh.deploy_history import rollback_plan

    intent = {"airflow_run_id": "run-rollback", "model": model,
              **{k: v for k, v in rollback_plan(None, "2", "1", "run-rollback").items() if k != "rolled_back"}}
    assert s3io.create_json(s3, "llmops-models", f"deployments/{model}/rollbacks/run-rollback.json", intent)
    reg.set_alias(model, "champion", "1")  # the first attempt's first move; then the worker was lost
    for _attempt in range(2):
        actions.rollback(conf, model=model, run_id="run-rollback", **kwargs)
    assert reg.by_alias(model, "champion").version == "1" and reg.by_alias(model, "previous").version == "2"
    current = s3io.read_json(s3, "llmops-models", f"deployments/{model}/current.json")
    assert [current["action"], *[h["action"] for h in current["history"]]] == ["rollback", "promote", "promote"]
    assert len(s3io.list_prefix(s3, "llmops-models", f"deployments/{model}/history/")) == 3
