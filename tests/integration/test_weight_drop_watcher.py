"""New weight drops are found, claimed exactly once (after their run exists), and start one model_refresh run each."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
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


IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "5e" * 32


@pytest.fixture
def bucket(platform) -> str:
    """A drops bucket of the test's own on the session's S3 endpoint (the watcher's state is per bucket)."""
    from llmops.io import s3 as s3io

    name = f"drops-{uuid.uuid4().hex[:12]}"
    s3io.client(endpoint_url=platform.endpoints.s3_url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(platform):
    from llmops.io import s3 as s3io

    return s3io.client(endpoint_url=platform.endpoints.s3_url)


def _publish(s3, folder: Path, bucket: str, model: str, revision: str):
    from llmops.refresh.publish import publish_drop

    return publish_drop(s3, folder, bucket, model=model, revision=revision, runtime_image=IMAGE)


def _settle(s3, bucket: str) -> None:
    """Claim everything the watcher would find now, as if each run had been triggered."""
    from llmops.refresh import drop_watch

    drop_watch.record_claims(s3, drop_watch.scan(s3, bucket, sweep=True), lambda _: True, claimed_by="test setup")


def test_a_failed_trigger_leaves_the_drop_unclaimed_and_the_next_poll_retries(s3, bucket: str,
                                                                              checkpoint: Path) -> None:
    from llmops.refresh import drop_watch

    _publish(s3, checkpoint, bucket, "fail-model", "r1")
    found = drop_watch.scan(s3, bucket)
    (drop,) = found.drops
    start = datetime.now(UTC)
    summary = drop_watch.record_claims(s3, found, lambda _: False, claimed_by="watcher run 1", now=start)
    assert summary["claimed"] == [] and [p["run_id"] for p in summary["pending"]] == [drop.run_id]
    assert drop_watch.read_claim(s3, bucket, drop.model, drop.hex) is None, "no run, no claim"
    assert drop_watch.read_state(s3, bucket).cursor == "", "the cursor does not skip the drop"
    retry = drop_watch.scan(s3, bucket, now=start + timedelta(seconds=drop_watch.retry_delay_s(1)))
    assert [d.run_id for d in retry.drops] == [drop.run_id], "the next poll (after the backoff) retries it"
    summary = drop_watch.record_claims(s3, retry, lambda run_id: run_id == drop.run_id, claimed_by="watcher run 2")
    assert [c["run_id"] for c in summary["claimed"]] == [drop.run_id]
    claim = drop_watch.read_claim(s3, bucket, drop.model, drop.hex)
    assert claim.state == "claimed" and claim.run_id == drop.run_id and claim.record["claimed_by"] == "watcher run 2"
    assert not drop_watch.scan(s3, bucket).has_work


def test_claims_are_keyed_by_model_not_by_weights_alone(s3, bucket: str, checkpoint: Path) -> None:
    from llmops.refresh import drop_watch

    first = _publish(s3, checkpoint, bucket, "model-a", "r1")
    _settle(s3, bucket)
    _publish(s3, checkpoint, bucket, "model-a", "r2")  # same weights, same model: a re-delivery
    _publish(s3, checkpoint, bucket, "model-b", "r1")  # same weights, another model: another drop
    found = drop_watch.scan(s3, bucket)
    assert [(d.model, d.revision) for d in found.drops] == [("model-b", "r1")]
    (drop,) = found.drops
    assert drop.hex == first.manifest.weight_digest
    assert drop.run_id == f"drop__model-b__{first.manifest.weight_digest[:24]}"
    drop_watch.record_claims(s3, found, lambda _: True, claimed_by="test")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="_claims/")["Contents"])
    assert keys == [f"_claims/model-a/{drop.hex}.json", f"_claims/model-b/{drop.hex}.json"]


def test_release_by_run_id_then_republish_is_found_again_as_generation_two(s3, bucket: str,
                                                                            checkpoint: Path) -> None:
    from llmops.refresh import drop_watch

    _publish(s3, checkpoint, bucket, "rel-model", "r1")
    found = drop_watch.scan(s3, bucket)
    (drop,) = found.drops
    drop_watch.record_claims(s3, found, lambda _: True, claimed_by="test")
    assert drop_watch.release_claim(s3, bucket, drop.run_id + "__g2", "not the holder") is False
    assert drop_watch.release_claim(s3, bucket, "manual__2026-11-23T12:00:00+00:00", "not the watcher's") is False
    assert drop_watch.read_claim(s3, bucket, drop.model, drop.hex).state == "claimed"
    assert drop_watch.release_claim(s3, bucket, drop.run_id, "receive quarantined the drop") is True
    assert not drop_watch.scan(s3, bucket, sweep=True).drops, "released, but nothing republished yet"
    while drop_watch.stamp(datetime.now(UTC)) <= drop.arrived_at:  # LastModified has one-second resolution
        time.sleep(0.05)
    _publish(s3, checkpoint, bucket, "rel-model", "r2")  # the corrected drop, byte for byte the same
    (again,) = drop_watch.scan(s3, bucket).drops
    assert again.revision == "r2" and again.generation == 2 and again.run_id == drop.run_id + "__g2"
    drop_watch.record_claims(s3, drop_watch.scan(s3, bucket), lambda _: True, claimed_by="test")
    claim = drop_watch.read_claim(s3, bucket, drop.model, drop.hex)
    assert (claim.state, claim.generation, claim.run_id) == ("claimed", 2, again.run_id)
    assert drop_watch.release_claim(s3, bucket, drop.run_id, "the generation-1 run, late") is False


def test_odd_segments_are_refused_at_publish_and_recorded_by_the_watcher(s3, bucket: str, checkpoint: Path,
                                                                          caplog) -> None:
    from llmops.refresh import drop_watch
    from llmops.refresh.publish import PublishError

    with pytest.raises(PublishError) as refused:
        _publish(s3, checkpoint, bucket, "Tiny_Chat", "r1")
    message = str(refused.value)
    assert "--model 'Tiny_Chat'" in message and "rule:" in message and "fix:" in message and "'tiny-chat'" in message
    with pytest.raises(PublishError, match="--revision 'r1..r2'"):
        _publish(s3, checkpoint, bucket, "tiny-chat", "r1..r2")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket), "nothing uploaded"
    # Another tool writes the drop anyway, with an arrival record: refused, loudly, once.
    key = "Tiny_Chat/r1/manifest.json"
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    s3.put_object(Bucket=bucket, Key=drop_watch.arrival_key("Tiny_Chat", "r1", datetime.now(UTC)), Body=b"{}")
    found = drop_watch.scan(s3, bucket)
    assert found.drops == [] and [r.key for r in found.refusals] == [key] and found.has_work
    with caplog.at_level("ERROR", logger="llmops.refresh.drop_watch"):
        summary = drop_watch.record_claims(s3, found, lambda _: True, claimed_by="test")
    assert [r["key"] for r in summary["refused"]] == [key]
    assert key in caplog.text and "rule:" in caplog.text and "fix:" in caplog.text
    recorded = json.loads(s3.get_object(Bucket=bucket, Key=drop_watch.refusal_key(key))["Body"].read())
    assert recorded["key"] == key and recorded["reason"] and recorded["fix"] and recorded["found_at"]
    assert drop_watch.read_state(s3, bucket).cursor == found.arrivals[0].key, "the cursor moves past a refusal"
    swept = drop_watch.scan(s3, bucket, sweep=True)
    assert swept.refusals == [], "recorded once"


def test_the_sweep_finds_a_drop_written_without_an_arrival_record(s3, bucket: str, checkpoint: Path) -> None:
    from llmops.refresh import drop_watch

    manifest = _publish(s3, checkpoint, bucket, "sweep-model", "r1").manifest.to_dict()
    _settle(s3, bucket)
    # Another tool writes a drop (other weights) without an arrival record.
    manifest["files"][0]["sha256"] = "ab" * 32
    manifest["revision"] = "r2"
    s3.put_object(Bucket=bucket, Key="sweep-model/r2/manifest.json", Body=json.dumps(manifest).encode())
    assert drop_watch.scan(s3, bucket, sweep=False).drops == [], "not on the fast path"
    state = drop_watch.read_state(s3, bucket)
    assert drop_watch.sweep_due(state.last_sweep_at, datetime.now(UTC) + timedelta(seconds=900), 900)
    found = drop_watch.scan(s3, bucket, now=datetime.now(UTC) + timedelta(seconds=900), sweep_interval_s=900)
    assert found.swept and [(d.revision, d.arrival) for d in found.drops] == [("r2", None)]
    assert found.swept_read == 1, "the sweep reads no known manifest's body"


def test_trigger_fires_when_a_drop_arrives(s3, bucket: str, checkpoint: Path) -> None:
    from llmops.refresh.drop_sensor import NewWeightDropTrigger

    _settle(s3, bucket)  # a swept bucket: the trigger polls the arrival records only

    async def first_event() -> dict:
        trigger = NewWeightDropTrigger(bucket, poll_interval_s=0.5)
        runner = trigger.run()
        waiting = asyncio.ensure_future(runner.__anext__())
        await asyncio.sleep(1.5)
        assert not waiting.done(), "nothing new yet: the trigger keeps waiting"
        await asyncio.to_thread(_publish, s3, checkpoint, bucket, "trig-model", "r1")
        event = await asyncio.wait_for(waiting, timeout=30)
        return event.payload

    payload = asyncio.run(first_event())
    assert [d["model"] for d in payload["scan"]["drops"]] == ["trig-model"]
    classpath, kwargs = NewWeightDropTrigger(bucket, sweep_interval_s=60).serialize()
    assert classpath == "llmops.refresh.drop_sensor.NewWeightDropTrigger"
    assert kwargs["bucket"] == bucket and kwargs["sweep_interval_s"] == 60


def test_watcher_dag_triggers_one_refresh_run_per_new_drop(airflow_db, platform, checkpoint: Path, publish) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun

    from llmops.io import s3 as s3io
    from llmops.refresh import drop_watch

    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    _settle(s3, "llmops-drops")
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
    _, _, hex24 = runs[0].run_id.split("__")
    (claim_key,) = [o["Key"] for o in s3.list_objects_v2(Bucket="llmops-drops", Prefix=f"_claims/{model}/")["Contents"]]
    assert claim_key.startswith(f"_claims/{model}/{hex24}")
    claim = json.loads(s3.get_object(Bucket="llmops-drops", Key=claim_key)["Body"].read())
    assert claim["state"] == "claimed" and claim["run_id"] == runs[0].run_id, "claimed after its run exists"
    assert not drop_watch.scan(s3, "llmops-drops").has_work, "the claim task moved the cursor"

    # The same weights re-delivered: the next watcher run waits instead of starting a refresh.
    publish(checkpoint, model, "r2")
    again = drop_watch.scan(s3, "llmops-drops")
    assert again.drops == [] and [a.outcome for a in again.arrivals] == ["held"]
    runs = [r for r in DagRun.find(dag_id="model_refresh") if r.run_id.startswith(f"drop__{model}__")]
    assert len(runs) == 1
