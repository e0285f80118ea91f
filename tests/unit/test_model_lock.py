"""The per-model refresh lease: the pure rule, and its S3 conditional writes (moto's S3 in-process)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from llmops.refresh import lease
from llmops.refresh.lease import Lease, LockAction, action_for

BUCKET = "llmops-models"


@pytest.mark.parametrize(("lease", "alive", "action"), [
    (None, True, LockAction.CREATE),
    (Lease("run-a", "t", "e"), True, LockAction.HELD),  # a retried claim of the holder itself
    (Lease("run-b", "t", "e"), True, LockAction.WAIT),
    (Lease("run-b", "t", "e"), False, LockAction.TAKE_OVER),  # the holder crashed before its teardown
])
def test_decide(lease: Lease | None, alive: bool, action: LockAction) -> None:
    asked: list[str] = []

    def holder_alive(run_id: str) -> bool:
        asked.append(run_id)
        return alive

    assert action_for(lease, "run-a", holder_alive) is action
    # Airflow is asked about the holder only when another run holds the lease.
    assert asked == ([] if lease is None or lease.run_id == "run-a" else [lease.run_id])


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _holder(s3) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=lease.lock_key("chat"))["Body"].read())


def test_one_run_per_model_and_models_are_independent(s3) -> None:
    alive = {"run-a", "run-b"}
    assert lease.acquire(s3, BUCKET, "chat", "run-a", alive.__contains__)[0]
    held, why = lease.acquire(s3, BUCKET, "chat", "run-b", alive.__contains__)
    assert not held and "run-a holds the lease" in why
    assert lease.acquire(s3, BUCKET, "other", "run-b", alive.__contains__)[0]
    assert lease.acquire(s3, BUCKET, "chat", "run-a", alive.__contains__) == (
        True, "chat: this run already holds the lease (a retry)")
    assert _holder(s3)["run_id"] == "run-a"


def test_release_frees_the_model_for_the_next_run_and_never_frees_another_runs_lease(s3) -> None:
    alive = {"run-a", "run-b"}.__contains__
    lease.acquire(s3, BUCKET, "chat", "run-a", alive)
    assert lease.release(s3, BUCKET, "chat", "run-b") is False
    assert _holder(s3)["run_id"] == "run-a"
    assert lease.release(s3, BUCKET, "chat", "run-a") is True
    assert lease.read_lease(s3, BUCKET, "chat") is None
    assert lease.release(s3, BUCKET, "chat", "run-a") is False  # a retried teardown
    assert lease.acquire(s3, BUCKET, "chat", "run-b", alive)[0]


def test_a_finished_holders_lease_is_taken_over(s3) -> None:
    lease.acquire(s3, BUCKET, "chat", "run-a", lambda _: True)
    held, why = lease.acquire(s3, BUCKET, "chat", "run-b", lambda run: run != "run-a")
    assert held and "took the lease over from finished run run-a" in why
    assert _holder(s3) | {"acquired_at": "-"} == {"run_id": "run-b", "acquired_at": "-", "took_over_from": "run-a"}


def test_racing_writers_cannot_both_win(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs that both read the lease free (or both read the same stale lease): the conditional
    write lets exactly one of them through."""
    lease.acquire(s3, BUCKET, "chat", "run-a", lambda _: True)
    stale = lease.read_lease(s3, BUCKET, "chat")
    # run-b takes the stale lease over first...
    assert lease.acquire(s3, BUCKET, "chat", "run-b", lambda _: False)[0]
    # ...then run-c, which read the same stale lease before run-b wrote, tries with its ETag.
    with monkeypatch.context() as m:
        m.setattr(lease, "read_lease", lambda *_: stale)  # run-c's read happened before run-b's write
        held, why = lease.acquire(s3, BUCKET, "chat", "run-c", lambda _: False)
    assert not held and "another run took the lease first" in why
    assert _holder(s3)["run_id"] == "run-b"
    s3.delete_object(Bucket=BUCKET, Key=lease.lock_key("chat"))
    s3.put_object(Bucket=BUCKET, Key=lease.lock_key("chat"), Body=b'{"run_id": "run-d"}')
    with monkeypatch.context() as m:
        m.setattr(lease, "read_lease", lambda *_: None)  # run-e read "free" before run-d created it
        assert not lease.acquire(s3, BUCKET, "chat", "run-e", lambda _: True)[0]
    assert _holder(s3)["run_id"] == "run-d"
