"""New weight drops are found, claimed exactly once, and start one model_refresh run each."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A small stand-in checkpoint folder (the watcher never looks inside the files)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_drops_are_claimed_once_and_redelivery_is_ignored(platform, checkpoint: Path, publish) -> None:
    from llmops.io import s3 as s3io
    from llmops.refresh.drop_watch import claim, unclaimed

    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    model = f"watch-{uuid.uuid4().hex[:8]}"
    publish(checkpoint, model, "r1")
    mine = [d for d in unclaimed(s3, "llmops-drops") if d.model == model]
    assert [d.revision for d in mine] == ["r1"]
    drop = mine[0]
    assert len(drop.identity) == 64 and drop.run_id.startswith(f"drop__{model}__")
    assert claim(s3, drop, "test") is True
    assert claim(s3, drop, "another watcher") is False, "a claim is taken exactly once"
    # The same weights delivered again under another revision are the same drop.
    publish(checkpoint, model, "r2")
    assert [d for d in unclaimed(s3, "llmops-drops") if d.model == model] == []
    # A manifest that cannot be parsed is still found, so receive rejects it loudly.
    s3.put_object(Bucket="llmops-drops", Key=f"{model}/broken/manifest.json", Body=b"{not json")
    (broken,) = [d for d in unclaimed(s3, "llmops-drops") if d.model == model]
    assert broken.revision == "broken" and broken.identity.startswith("manifest-sha256:")
    assert claim(s3, broken, "test")


def test_trigger_fires_when_a_drop_arrives(platform, checkpoint: Path, publish) -> None:
    from llmops.io import s3 as s3io
    from llmops.refresh.drop_sensor import NewWeightDropTrigger
    from llmops.refresh.drop_watch import claim, unclaimed

    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    for drop in unclaimed(s3, "llmops-drops"):  # start from a bucket with nothing new
        claim(s3, drop, "test setup")
    model = f"trig-{uuid.uuid4().hex[:8]}"

    async def first_event() -> dict:
        trigger = NewWeightDropTrigger("llmops-drops", poll_interval_s=0.5)
        runner = trigger.run()
        waiting = asyncio.ensure_future(runner.__anext__())
        await asyncio.sleep(1.5)
        assert not waiting.done(), "nothing new yet: the trigger keeps waiting"
        await asyncio.to_thread(publish, checkpoint, model, "r1")
        event = await asyncio.wait_for(waiting, timeout=30)
        return event.payload

    payload = asyncio.run(first_event())
    assert [d["model"] for d in payload["drops"]] == [model]
    classpath, kwargs = NewWeightDropTrigger("llmops-drops").serialize()
    assert classpath == "llmops.refresh.drop_sensor.NewWeightDropTrigger" and kwargs["bucket"] == "llmops-drops"


def test_watcher_dag_triggers_one_refresh_run_per_new_drop(airflow_db, platform, checkpoint: Path, publish) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun

    from llmops.io import s3 as s3io
    from llmops.refresh.drop_watch import claim, unclaimed

    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    for drop in unclaimed(s3, "llmops-drops"):
        claim(s3, drop, "test setup")
    model = f"dag-{uuid.uuid4().hex[:8]}"
    publish(checkpoint, model, "r1")

    # model_refresh must be known to the metadata DB before a run of it can be triggered,
    # as the dag-processor would have done.
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "dags", "reserialize"], check=True,
                   capture_output=True, env=os.environ.copy())
    bag = DagBag(dag_folder=str(ROOT / "dags" / "weight_drop_watcher.py"))
    assert not bag.import_errors
    watcher = bag.dags["weight_drop_watcher"]
    assert watcher.test().state == "success"
    runs = [r for r in DagRun.find(dag_id="model_refresh") if r.run_id.startswith(f"drop__{model}__")]
    assert len(runs) == 1, [r.run_id for r in DagRun.find(dag_id="model_refresh")]
    assert runs[0].conf == {"model": model, "drop_uri": f"s3://llmops-drops/{model}/r1/"}
    assert unclaimed(s3, "llmops-drops") == []

    # The same weights re-delivered: the next watcher run waits instead of starting a refresh.
    publish(checkpoint, model, "r2")
    assert unclaimed(s3, "llmops-drops") == []
    runs = [r for r in DagRun.find(dag_id="model_refresh") if r.run_id.startswith(f"drop__{model}__")]
    assert len(runs) == 1
