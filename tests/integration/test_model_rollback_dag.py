"""model_rollback restores the previous champion in one run, recorded with its history."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_rollback_moves_champion_back_and_keeps_history(airflow_db, platform) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from llmops.config import settings
    from llmops.io import s3 as s3io
    from llmops.io.registry import ModelRegistry
    from llmops.refresh import actions

    model = f"rollback-{uuid.uuid4().hex[:8]}"
    reg = ModelRegistry(platform.endpoints.mlflow_url)
    conf = settings.load()
    s3_url = platform.endpoints.s3_url
    for digest in ("a" * 64, "b" * 64):
        version, _ = reg.register(model, f"s3://llmops-models/models/{model}/sha256-{digest}/",
                                  {"weight_digest": digest, "runtime_image": "vllm@sha256:" + "c" * 64})
        actions.promote(conf, model=model, version=version.version, run_id=f"promote-{version.version}",
                        tracking_uri=platform.endpoints.mlflow_url,
                        models_bucket="llmops-models")
    assert reg.by_alias(model, "champion").version == "2" and reg.by_alias(model, "previous").version == "1"

    bag = DagBag(dag_folder=str(ROOT / "dags" / "model_rollback.py"))
    run = bag.dags["model_rollback"].test(run_conf={"model": model})
    assert run.state == "success"
    [ti] = run.get_task_instances()
    served = ti.xcom_pull(task_ids="rollback")["serving"]
    assert served["action"] == "none" and served["router"] == "nginx"  # nothing serves between runs here
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
