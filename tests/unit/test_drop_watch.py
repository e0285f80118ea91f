"""The weight-drop watcher's decisions: which drops are new, run ids per generation, the cursor.

Pure functions first; then the scan and the claim recording on an in-process S3 (moto), where
``run_exists`` stands in for Airflow's answer to "does this model_refresh run exist?".
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from llmops.refresh import drop_watch as dw
from llmops.refresh.drop_watch import Claim

BUCKET = "llmops-drops"
T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "5e" * 32


# -- Pure decisions ----------------------------------------------------------------------------


def _claim(state: str, generation: int = 1, arrived_at: datetime = T0) -> Claim:
    return Claim(state=state, generation=generation, run_id="x", arrived_at=dw.stamp(arrived_at), etag='"e"')


def test_a_drop_without_claim_is_new_as_generation_one() -> None:
    assert dw.claim_decision(dw.stamp(T0), None) == (True, 1)


def test_a_held_claim_makes_any_redelivery_a_duplicate() -> None:
    later = dw.stamp(T0 + timedelta(days=1))
    assert dw.claim_decision(later, _claim(dw.CLAIMED)) == (False, 1)


def test_a_released_claim_is_new_again_only_for_a_newer_manifest() -> None:
    released = _claim(dw.RELEASED, generation=2)
    assert dw.claim_decision(dw.stamp(T0), released) == (False, 2), "the same manifest: not new"
    assert dw.claim_decision(dw.stamp(T0 - timedelta(seconds=5)), released) == (False, 2)
    assert dw.claim_decision(dw.stamp(T0 + timedelta(seconds=1)), released) == (True, 3)


def test_run_ids_per_generation_round_trip_and_match_airflows_pattern() -> None:
    hex_digest = "ab" * 32
    first, third = dw.run_id_for("tiny-chat", hex_digest), dw.run_id_for("tiny-chat", hex_digest, 3)
    assert first == "drop__tiny-chat__" + "ab" * 12
    assert third == first + "__g3"
    for run_id, generation in ((first, 1), (third, 3)):
        assert re.match(dw.AIRFLOW_RUN_ID_PATTERN, run_id)
        assert dw.parse_run_id(run_id) == ("tiny-chat", "ab" * 12, generation)


@pytest.mark.parametrize("run_id", ["manual__2026-11-23T12:00:00+00:00", "scheduled__x", "drop__Tiny__" + "a" * 24,
                                    "drop__m__" + "a" * 23, "drop__m__" + "a" * 24 + "__g1",
                                    "drop__m__" + "a" * 24 + "__g0", "drop__m__" + "A" * 24, "", "drop__m"])
def test_runs_not_started_by_the_watcher_do_not_parse(run_id: str) -> None:
    assert dw.parse_run_id(run_id) is None


def test_arrival_keys_sort_by_time_and_parse_back() -> None:
    early = dw.arrival_key("m", "r10", T0)
    late = dw.arrival_key("m", "r9", T0 + timedelta(microseconds=1))
    assert early < late, "arrival order, whatever the revision names"
    assert dw.parse_arrival_key(late) == ("20261123T120000.000001Z", "m", "r9")
    assert dw.parse_arrival_key(dw.arrival_key("m", "a__b.json", T0))[1:] == ("m", "a__b.json")
    assert dw.parse_arrival_key("_arrivals/garbage.json") is None


def test_the_cursor_stops_before_the_first_unsettled_arrival() -> None:
    arrivals = [("_arrivals/3", True), ("_arrivals/1", True), ("_arrivals/2", False), ("_arrivals/4", True)]
    assert dw.advance_cursor("", arrivals) == "_arrivals/1"
    assert dw.advance_cursor("", [(k, True) for k, _ in arrivals]) == "_arrivals/4"
    assert dw.advance_cursor("_arrivals/1", [("_arrivals/2", False)]) == "_arrivals/1"
    assert dw.advance_cursor("_arrivals/5", [("_arrivals/4", True)]) == "_arrivals/5", "never backwards"


def test_sweep_on_a_fresh_bucket_then_every_interval() -> None:
    assert dw.sweep_due(None, T0, 900)
    assert not dw.sweep_due(dw.stamp(T0), T0 + timedelta(seconds=899), 900)
    assert dw.sweep_due(dw.stamp(T0), T0 + timedelta(seconds=900), 900)


def test_retry_backoff_doubles_and_is_capped() -> None:
    assert [dw.retry_delay_s(n) for n in (1, 2, 3)] == [60, 120, 240]
    assert dw.retry_delay_s(30) == dw.RETRY_MAX_S


# -- Scan and record on an in-process S3 -------------------------------------------------------


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _manifest(model: str, revision: str, weights: bytes = b"weights") -> bytes:
    return json.dumps({"model": model, "model_family": "llama", "source": "file:///ckpt", "revision": revision,
                       "runtime_image": IMAGE, "created_at": "2026-11-23T12:00:00+00:00",
                       "files": [{"path": "model.safetensors", "size": len(weights),
                                  "sha256": hashlib.sha256(weights).hexdigest()}]}).encode()


def _deliver(s3, model: str, revision: str, weights: bytes = b"weights", *, arrival: bool = True,
             at: datetime | None = None, body: bytes | None = None) -> None:
    s3.put_object(Bucket=BUCKET, Key=dw.manifest_key(model, revision), Body=body or _manifest(model, revision, weights))
    if arrival:
        s3.put_object(Bucket=BUCKET, Key=dw.arrival_key(model, revision, at or datetime.now(UTC)), Body=b"{}")


def _after_second_of(stamped: str) -> None:
    """Wait until the wall clock is in a later second than ``stamped`` (at most one second)."""
    while dw.stamp(datetime.now(UTC)) <= stamped:
        time.sleep(0.05)


def _poll(s3, *, sweep: bool | None = False, now: datetime | None = None) -> dw.Scan:
    """One poll, through the same JSON the sensor hands on (XCom)."""
    return dw.Scan.from_dict(json.loads(json.dumps(dw.scan(s3, BUCKET, now=now, sweep=sweep).to_dict())))


def _record(s3, found: dw.Scan, runs: set[str], now: datetime | None = None) -> dict:
    return dw.record_claims(s3, found, lambda run_id: run_id in runs, claimed_by="test", now=now)


def test_a_failed_trigger_leaves_the_drop_unclaimed_and_the_cursor_before_it(s3) -> None:
    _deliver(s3, "m", "r1", at=T0)
    found = _poll(s3)
    (drop,) = found.drops
    summary = _record(s3, found, runs=set(), now=T0)  # the trigger failed: no model_refresh run
    assert summary["claimed"] == [] and summary["pending"][0]["run_id"] == drop.run_id
    assert dw.read_claim(s3, BUCKET, "m", drop.hex) is None
    assert dw.read_state(s3, BUCKET).cursor == "", "the cursor never moves past an unclaimed drop"
    # During the backoff the drop waits; after it, the same drop (same run id) is found again.
    assert _poll(s3, now=T0 + timedelta(seconds=30)).drops == []
    assert not _poll(s3, now=T0 + timedelta(seconds=30)).has_work
    again = _poll(s3, now=T0 + timedelta(seconds=61))
    assert [d.run_id for d in again.drops] == [drop.run_id]
    summary = _record(s3, again, runs={drop.run_id}, now=T0 + timedelta(seconds=62))
    assert [c["run_id"] for c in summary["claimed"]] == [drop.run_id]
    assert dw.read_state(s3, BUCKET).cursor == again.arrivals[0].key and dw.read_state(s3, BUCKET).retries == {}
    assert _poll(s3).arrivals == [] and not _poll(s3).has_work


def test_claims_are_keyed_by_model_and_weights(s3) -> None:
    _deliver(s3, "alpha", "r1", b"same weights")
    found = _poll(s3)
    _record(s3, found, runs={d.run_id for d in found.drops})
    _deliver(s3, "alpha", "r2", b"same weights")  # the same weights re-delivered: the same drop
    _deliver(s3, "beta", "r1", b"same weights")  # the same weights, another model: another drop
    found = _poll(s3)
    assert [(d.model, d.revision) for d in found.drops] == [("beta", "r1")]
    assert [a.outcome for a in found.arrivals] == ["held", "new"]
    _record(s3, found, runs={d.run_id for d in found.drops})
    claim = json.loads(s3.get_object(Bucket=BUCKET, Key=dw.claim_key("beta", found.drops[0].hex))["Body"].read())
    assert claim["state"] == "claimed" and claim["generation"] == 1 and claim["kind"] == dw.WEIGHT_DIGEST


def test_two_revisions_with_the_same_weights_in_one_poll_are_one_drop(s3) -> None:
    _deliver(s3, "m", "r9", b"w", at=T0)
    _deliver(s3, "m", "r10", b"w", at=T0 + timedelta(seconds=1))
    found = _poll(s3)
    assert [d.revision for d in found.drops] == ["r9"]
    assert [a.outcome for a in found.arrivals] == ["new", "same"]
    _record(s3, found, runs={found.drops[0].run_id})
    assert dw.read_state(s3, BUCKET).cursor == found.arrivals[1].key


def test_release_then_republish_is_generation_two_and_only_the_holder_may_release(s3) -> None:
    _deliver(s3, "m", "r1", at=T0)
    found = _poll(s3)
    (drop,) = found.drops
    _record(s3, found, runs={drop.run_id})
    assert dw.release_claim(s3, BUCKET, drop.run_id + "__g2", "not the holder") is False
    assert dw.release_claim(s3, BUCKET, "manual__2026-11-23T12:00:00+00:00", "not the watcher's") is False
    assert dw.release_claim(s3, BUCKET, drop.run_id, "receive quarantined the drop") is True
    assert dw.release_claim(s3, BUCKET, drop.run_id, "again") is False, "already released"
    # Released but not republished: nothing new, even for a sweep.
    assert _poll(s3, sweep=True).drops == []
    # The corrected drop republished (same bytes, a newer manifest): generation 2.
    _after_second_of(drop.arrived_at)  # S3's LastModified has one-second resolution
    s3.delete_object(Bucket=BUCKET, Key=dw.manifest_key("m", "r1"))
    _deliver(s3, "m", "r1")
    found = _poll(s3)
    (again,) = found.drops
    assert again.generation == 2 and again.run_id == drop.run_id + "__g2"
    _record(s3, found, runs={again.run_id})
    claim = dw.read_claim(s3, BUCKET, "m", drop.hex)
    assert claim.state == "claimed" and claim.generation == 2 and claim.run_id == again.run_id
    assert claim.record["history"][0]["release_reason"] == "receive quarantined the drop"
    assert dw.release_claim(s3, BUCKET, drop.run_id, "an old run") is False, "generation 1 no longer holds it"
    assert dw.release_claim(s3, BUCKET, again.run_id, "lease wait timed out") is True


def test_a_release_asked_before_the_claim_is_recorded_is_not_lost(s3) -> None:
    """The triggered run can fail at receive before the watcher's claim task records the claim."""
    _deliver(s3, "m", "r1", at=T0)
    found = _poll(s3)
    (drop,) = found.drops
    assert dw.release_claim(s3, BUCKET, drop.run_id, "receive rejected the manifest") is True
    assert dw.read_claim(s3, BUCKET, "m", drop.hex) is None
    summary = _record(s3, found, runs={drop.run_id})
    assert [c["run_id"] for c in summary["claimed"]] == [drop.run_id], "settled: the cursor moves on"
    claim = dw.read_claim(s3, BUCKET, "m", drop.hex)
    assert (claim.state, claim.run_id) == ("released", drop.run_id)
    assert claim.record["release_reason"] == "receive rejected the manifest"
    assert dw.release_claim(s3, BUCKET, drop.run_id, "asked twice") is False
    _after_second_of(drop.arrived_at)
    _deliver(s3, "m", "r2")  # the corrected drop (same weights) republished
    assert [d.run_id for d in _poll(s3).drops] == [drop.run_id + "__g2"]


def test_an_unparsable_manifest_is_still_a_drop(s3) -> None:
    _deliver(s3, "m", "broken", body=b"{not json")
    (drop,) = _poll(s3).drops
    assert drop.kind == dw.MANIFEST_SHA256 and drop.hex == hashlib.sha256(b"{not json").hexdigest()


def test_odd_segments_are_refused_once_and_the_cursor_moves_past_them(s3, caplog) -> None:
    _deliver(s3, "Bad_Model", "r1", at=T0)
    found = _poll(s3)
    assert found.drops == [] and found.has_work
    (refusal,) = found.refusals
    assert refusal.key == "Bad_Model/r1/manifest.json" and "[a-z0-9]" in refusal.rule and refusal.fix
    with caplog.at_level("ERROR", logger="llmops.refresh.drop_watch"):
        summary = _record(s3, found, runs=set())
    assert summary["refused"][0]["key"] == refusal.key
    assert "Bad_Model/r1/manifest.json" in caplog.text and "fix:" in caplog.text
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=dw.refusal_key(refusal.key))["Body"].read())
    assert record["key"] == refusal.key and record["found_at"]
    assert dw.read_state(s3, BUCKET).cursor == found.arrivals[0].key
    # The sweep knows it is refused already: recorded once, not found again and again.
    swept = _poll(s3, sweep=True)
    assert swept.refusals == [] and swept.drops == []
    assert swept.index == {refusal.key: dw.stamp(s3.head_object(Bucket=BUCKET, Key=refusal.key)["LastModified"])}
    assert _record(s3, swept, runs=set())["refused"] == []  # the sweep index learns it
    assert not _poll(s3, sweep=True).has_work


def test_a_malformed_arrival_record_is_refused_not_skipped(s3) -> None:
    s3.put_object(Bucket=BUCKET, Key="_arrivals/garbage.json", Body=b"{}")
    found = _poll(s3)
    assert [r.key for r in found.refusals] == ["_arrivals/garbage.json"]
    _record(s3, found, runs=set())
    assert dw.read_state(s3, BUCKET).cursor == "_arrivals/garbage.json"


def test_the_sweep_finds_drops_without_arrival_records_and_then_reads_no_known_body(s3) -> None:
    _deliver(s3, "m", "r1", arrival=False)
    assert _poll(s3, sweep=False).drops == [], "the fast path only sees arrival records"
    found = _poll(s3, sweep=None)  # a fresh bucket: the first poll sweeps
    assert found.swept and [d.revision for d in found.drops] == ["r1"] and found.drops[0].arrival is None
    _record(s3, found, runs={found.drops[0].run_id})
    _deliver(s3, "m", "r2", arrival=False)  # a duplicate, written by a tool without arrival records
    swept = _poll(s3, sweep=True)
    assert swept.swept_read == 1, "only the manifest the index does not know is read"
    assert swept.drops == [] and swept.has_work  # the index learns r2
    _record(s3, swept, runs=set())
    again = _poll(s3, sweep=True)
    assert again.swept_read == 0 and not again.has_work
    assert dw.read_state(s3, BUCKET).last_sweep_at is not None


def test_a_quiet_poll_is_one_list_request(s3) -> None:
    for i in range(5):
        _deliver(s3, "m", f"r{i}", f"w{i}".encode())
    found = _poll(s3)
    _record(s3, found, runs={d.run_id for d in found.drops})
    state = dw.read_state(s3, BUCKET)
    quiet = dw.scan(s3, BUCKET, state, sweep=False)
    assert quiet.requests == 1 and not quiet.has_work


def test_an_oversized_manifest_is_found_by_a_bounded_read_and_left_to_receive(s3, monkeypatch) -> None:
    """A manifest over MANIFEST_MAX_BYTES is neither read whole nor skipped: it gets the identity of
    its first bytes, so receive rejects and quarantines it loudly."""
    monkeypatch.setattr(dw, "MANIFEST_MAX_BYTES", 1024)
    padded = _manifest("m", "huge")[:-1] + b', "padding": "' + b"x" * 4096 + b'"}'
    _deliver(s3, "m", "huge", body=padded)
    (drop,) = _poll(s3).drops
    assert drop.identity.startswith("manifest-sha256:")
    assert drop.identity.endswith(hashlib.sha256(padded[:1025]).hexdigest())


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"state": ["claimed"], "generation": "one"}',
                                  b'{"state": "claimed", "generation": 1, "arrived_at": "yesterday"}'])
def test_a_claim_object_the_watcher_did_not_write_is_named_with_the_fix(s3, body: bytes) -> None:
    _deliver(s3, "m", "r1", at=T0)
    (drop,) = _poll(s3).drops
    s3.put_object(Bucket=BUCKET, Key=dw.claim_key(drop.model, drop.hex), Body=body)
    with pytest.raises(dw.WatchStateError, match=rf"s3://{BUCKET}/_claims/m/{drop.hex}\.json: .*fix: .*delete it"):
        dw.read_claim(s3, BUCKET, drop.model, drop.hex)


def test_a_state_object_the_watcher_did_not_write_is_named_with_the_fix(s3) -> None:
    s3.put_object(Bucket=BUCKET, Key=dw.STATE_KEY, Body=b"\xff\xfe")
    with pytest.raises(dw.WatchStateError, match=r"_watcher/state\.json: not a watcher record"):
        dw.read_state(s3, BUCKET)
