"""Stage's pure decisions: does the drop match receive's receipt, which model may it register
under, and what does each staged object need (a marker never replaces the check)."""

from __future__ import annotations

import hashlib

import pytest

from llmops.core.manifests import ManifestFile, WeightDropManifest
from llmops.jobs.stage import registered_model_problem
from llmops.refresh.staging import (
    DropReceipt,
    ObjectState,
    plan_staging,
    receipt_differences,
    receipt_key,
    source_etag_differences,
)

DROP = "s3://llmops-drops/tiny-chat/r1/"
IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "a" * 64


def _file(path: str, body: bytes) -> ManifestFile:
    return ManifestFile(path, len(body), hashlib.sha256(body).hexdigest())


FILES = (_file("config.json", b"{}"), _file("model.safetensors", b"weights" * 100), _file("tokenizer.json", b"[]"))
MANIFEST = WeightDropManifest(model="tiny-chat", model_family="llama", source="test", revision="r1",
                              runtime_image=IMAGE, created_at="2026-11-23T12:00:00Z", files=FILES)
DROP_NOW = {f.path: ObjectState(f.size, f"etag-{f.path}") for f in FILES}


def _receipt(**overrides: object) -> DropReceipt:
    fields: dict[str, object] = {"drop_uri": DROP, "model": "tiny-chat", "revision": "r1",
                                 "weight_digest": MANIFEST.weight_digest, "manifest_etag": "etag-manifest",
                                 "objects": dict(DROP_NOW)}
    fields.update(overrides)
    return DropReceipt(**fields)  # type: ignore[arg-type]


def _differences(receipt: DropReceipt | None = None, *, manifest_etag: str = '"etag-manifest"',
                 drop_now: dict[str, ObjectState] | None = None, manifest: WeightDropManifest = MANIFEST) -> list[str]:
    return receipt_differences(receipt or _receipt(), drop_uri=DROP, manifest=manifest, manifest_etag=manifest_etag,
                               drop_now=DROP_NOW if drop_now is None else drop_now)


def test_the_drop_as_received_matches_its_receipt() -> None:
    assert _differences() == []  # quotes around an ETag do not count
    assert receipt_key("tiny-chat", "r1") == "receipts/tiny-chat/r1/receipt.json"


@pytest.mark.parametrize(("change", "expected"), [
    ({"manifest_etag": "other"}, "manifest.json: rewritten since receive (ETag other, receive verified etag-manifest)"),
    ({"drop_now": {**DROP_NOW, "model.safetensors": ObjectState(700, "etag-x")}},
     "model.safetensors: rewritten since receive (ETag etag-x, receive verified etag-model.safetensors)"),
    ({"drop_now": {**DROP_NOW, "model.safetensors": ObjectState(5, "etag-model.safetensors")}},
     "model.safetensors: 5 bytes now, receive verified 700"),
    ({"drop_now": {k: v for k, v in DROP_NOW.items() if k != "tokenizer.json"}},
     "tokenizer.json: removed since receive"),
    ({"drop_now": {**DROP_NOW, "notes.txt": ObjectState(3, "e")}},
     "notes.txt: added since receive (not in the manifest)"),
], ids=["manifest-rewritten", "object-rewritten", "object-resized", "object-removed", "object-added"])
def test_a_drop_changed_since_receive_is_named_object_by_object(change: dict, expected: str) -> None:
    assert _differences(**change) == [expected]


def test_a_receipt_of_another_drop_or_digest_does_not_match() -> None:
    other = _receipt(drop_uri="s3://llmops-drops/tiny-chat/r2/", weight_digest="0" * 64,
                     objects={k: v for k, v in DROP_NOW.items() if k != "config.json"})
    problems = _differences(other)
    assert problems[0] == f"the receipt is for s3://llmops-drops/tiny-chat/r2/, not {DROP}"
    assert problems[1].startswith("manifest.json: weight digest ")
    assert "config.json: listed by the manifest but not verified by receive" in problems


def test_this_runs_receive_result_must_be_the_receipts() -> None:
    receipt = _receipt()
    assert source_etag_differences(receipt, {k: f'"{v.etag}"' for k, v in DROP_NOW.items()}) == []
    changed = {**{k: v.etag for k, v in DROP_NOW.items()}, "config.json": "older"}
    changed.pop("tokenizer.json")
    assert source_etag_differences(receipt, changed) == [
        "config.json: this run's receive read ETag older, the receipt holds etag-config.json",
        "tokenizer.json: in the receipt, not in this run's receive result"]


def test_a_receipt_survives_its_json_and_a_malformed_one_names_the_fix() -> None:
    receipt = _receipt(received_at="2026-11-23T12:00:00+00:00", mlflow_run_id="abc", airflow_run_id="manual__1",
                       airflow_try="2")
    data = receipt.to_dict()
    assert data["manifest"] == {"key": "tiny-chat/r1/manifest.json", "etag": "etag-manifest"}
    assert {"path": "config.json", "key": "tiny-chat/r1/config.json", "size": 2,
            "etag": "etag-config.json"} in data["objects"]
    assert DropReceipt.from_dict(data, "s3://m/receipt.json") == receipt
    del data["manifest"]
    with pytest.raises(ValueError, match=r"s3://m/receipt.json: field 'manifest' is missing .*fix: run receive"):
        DropReceipt.from_dict(data, "s3://m/receipt.json")


def test_a_drop_registers_only_under_its_own_model() -> None:
    assert registered_model_problem("tiny-chat", "tiny-chat", "tiny-chat", DROP) is None
    problem = registered_model_problem("other-chat", "tiny-chat", "tiny-chat", DROP)
    assert problem is not None
    assert "--registered-model 'other-chat' is not the drop's model 'tiny-chat'" in problem
    assert "fix: pass --registered-model tiny-chat" in problem
    misplaced = registered_model_problem("tiny-chat", "tiny-chat", "other-chat", DROP)
    assert misplaced is not None and "fix: publish the drop under tiny-chat/<revision>/" in misplaced


def test_without_a_marker_present_objects_are_hashed_and_the_rest_copied() -> None:
    present = {"config.json": ObjectState(2, "a"), "model.safetensors": ObjectState(3, "b")}  # truncated
    plan = plan_staging(FILES, {}, present)
    assert plan.intact == () and plan.changed == {}
    assert plan.to_hash == ("config.json",)
    assert plan.to_copy == ("model.safetensors", "tokenizer.json")


def test_a_marker_never_replaces_the_check_of_each_staged_object() -> None:
    recorded = {f.path: ObjectState(f.size, f"staged-{f.path}") for f in FILES}
    assert plan_staging(FILES, recorded, recorded).intact == tuple(f.path for f in FILES)

    overwritten = {**recorded, "model.safetensors": ObjectState(700, "someone-else"),
                   "config.json": ObjectState(2, "staged-config.json")}
    del overwritten["tokenizer.json"]
    plan = plan_staging(FILES, recorded, overwritten)
    assert plan.intact == ("config.json",) and plan.to_hash == ()
    assert plan.to_copy == ("model.safetensors", "tokenizer.json")
    assert plan.changed == {
        "model.safetensors": "700 bytes, ETag someone-else since staging; staged as 700 bytes, "
                             "ETag staged-model.safetensors",
        "tokenizer.json": "deleted since staging"}
