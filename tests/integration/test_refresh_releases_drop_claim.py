"""A watcher-started refresh that fails at receive gives its drop claim back: the corrected drop,
republished, starts a new refresh (nothing is lost), and the verdict is not retried."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "5e" * 32


def test_a_quarantined_drop_releases_its_claim_and_its_republish_runs(airflow_db, platform, models_dir,
                                                                      monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun

    from llmops.io import s3 as s3io
    from llmops.refresh import drop_watch, lease
    from llmops.refresh.publish import Faults, publish_drop

    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    bucket = "llmops-drops"
    drop_watch.record_claims(s3, drop_watch.scan(s3, bucket, sweep=True), lambda _: True, claimed_by="setup")
    model = f"quar-{uuid.uuid4().hex[:8]}"
    checkpoint = models_dir / "good"
    publish_drop(s3, checkpoint, bucket, model=model, revision="r1", runtime_image=IMAGE,
                 faults=Faults(corrupt=("model.safetensors",)), exclude=("maker.json",))
    found = drop_watch.scan(s3, bucket)
    (drop,) = [d for d in found.drops if d.model == model]
    drop_watch.record_claims(s3, found, lambda _: True, claimed_by="the watcher")  # as after its trigger

    # The run the watcher triggered carries the drop's run id (TriggerDagRunOperator's trigger_run_id).
    monkeypatch.setattr(DagRun, "generate_run_id", staticmethod(lambda **_: drop.run_id))
    dag = DagBag(dag_folder=str(ROOT / "dags" / "model_refresh.py")).dags["model_refresh"]
    run = dag.test(run_conf={"model": model, "drop_uri": drop.uri, "hardware_classes": ["cpu"]})
    assert run.run_id == drop.run_id and run.state == "failed"
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["receive"].state == "failed" and tis["receive"].try_number == 1, "a verdict is not retried"
    assert tis["release_drop_claim"].state == "success"
    assert tis["stage"].state == "upstream_failed"
    assert lease.read_lease(s3, "llmops-models", model) is None, "the model's lease is released too"
    claim = drop_watch.read_claim(s3, bucket, model, drop.hex)
    assert claim.state == "released" and claim.run_id == drop.run_id

    # The quarantined drop stays where it was (copied, nothing deleted) and is not retried by itself...
    assert not [d for d in drop_watch.scan(s3, bucket, sweep=True).drops if d.model == model]
    # ...the corrected drop, republished (the same weights, a new revision), is found again.
    while drop_watch.stamp(datetime.now(UTC)) <= drop.arrived_at:  # LastModified has one-second resolution
        time.sleep(0.05)
    publish_drop(s3, checkpoint, bucket, model=model, revision="r2", runtime_image=IMAGE, exclude=("maker.json",))
    (again,) = [d for d in drop_watch.scan(s3, bucket).drops if d.model == model]
    assert again.run_id == f"{drop.run_id}__g2" and again.generation == 2 and again.revision == "r2"


def test_a_refresh_started_by_hand_has_no_claim_to_release(platform) -> None:
    from llmops.io import s3 as s3io
    from llmops.refresh import drop_watch

    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    assert drop_watch.release_claim(s3, "llmops-drops", "manual__2026-12-01T00:00:00+00:00", "receive failed") is False
