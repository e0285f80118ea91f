"""The refresh pipeline's pod jobs as real processes against the embedded platform.

``publish_drop`` -> ``receive`` -> ``stage`` -> ``fetch_weights`` run as ``python -m
llmops.jobs.<name>`` (what both launchers do) against the session's moto S3 endpoint and MLflow
server, on the model maker's ``good`` checkpoint. Each test uses its own model name, so the
tests are independent within the shared session platform. A pod killed mid-task is the job's
process killed with SIGKILL at a chosen S3 call (see :data:`KILLER`): no ``finally`` runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmops.config.settings import PROJECT_ROOT
from llmops.core.manifests import MANIFEST_NAME, STAGED_MARKER
from llmops.io import integrity
from llmops.io import s3 as s3io
from llmops.io.registry import CHALLENGER, PIN_PREFIX, ModelRegistry
from llmops.io.s3 import list_prefix, parse_s3_uri, read_json

pytestmark = pytest.mark.integration

IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "c" * 64
EXPERIMENT = "llmops-refresh-tests"
WEIGHTS = "model.safetensors"
KILLER = r"""
import os, signal, sys, threading
from llmops.jobs import stage

operation, _, arg = os.environ["LLMOPS_TEST_KILL_ON"].partition(":")
real = stage.client_from_env
calls = threading.Condition()
count = {"started": 0, "done": 0}


def kill():
    sys.stderr.write(f"killed at {operation}:{arg}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def before(params, **_):
    if operation == "PutObject":  # kill before writing the key ending with arg
        if params["Key"].endswith(arg):
            kill()
        return
    with calls:  # let the first arg calls finish, kill before the next one is sent
        count["started"] += 1
        if count["started"] > int(arg):
            calls.wait_for(lambda: count["done"] >= int(arg))
            kill()


def after(**_):
    with calls:
        count["done"] += 1
        calls.notify_all()


def client_from_env(*args, **kwargs):
    client = real(*args, **kwargs)
    # before-parameter-build sees the call's own parameters (Key), before-call the HTTP request.
    client.meta.events.register(f"before-parameter-build.s3.{operation}", before)
    client.meta.events.register(f"after-call.s3.{operation}", after)
    return client


stage.client_from_env = client_from_env
sys.exit(stage.main(sys.argv[1:]))
"""
"""``python -c KILLER <stage args>``: the stage job, SIGKILLed at ``$LLMOPS_TEST_KILL_ON``:
``CopyObject:<n>`` once n copies finished (the next is never sent), ``PutObject:<suffix>``
before it writes a key ending with ``suffix``."""


@dataclass(frozen=True)
class JobRun:
    """A finished job: exit status, output and its ``return.json`` (None when it wrote none)."""

    returncode: int
    output: str
    result: dict[str, Any] | None


Runner = Callable[..., JobRun]


@pytest.fixture(scope="module")
def buckets(platform) -> tuple[str, str]:
    """(drops bucket, models bucket) of the platform."""
    return platform.settings_file.bucket("drops"), platform.settings_file.bucket("models")


@pytest.fixture(scope="module")
def s3(platform) -> Any:
    return s3io.client(endpoint_url=platform.endpoints.s3_url)


@pytest.fixture(scope="module")
def run_job(platform, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """Run ``python -m llmops.jobs.<name> *args`` with the platform's env; collect its result."""

    def run(name: str, *args: str, env: dict[str, str] | None = None, kill_on: str | None = None) -> JobRun:
        xcom = tmp_path_factory.mktemp(f"xcom-{name}")
        environ = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "plugins"), "LLMOPS_XCOM_DIR": str(xcom),
                   "LLMOPS_VLLM_IMAGE": IMAGE, **(env or {})}
        command = [sys.executable, "-m", f"llmops.jobs.{name}"]
        if kill_on is not None:
            assert name == "stage", "KILLER wraps the stage job"
            command, environ["LLMOPS_TEST_KILL_ON"] = [sys.executable, "-c", KILLER], kill_on
        done = subprocess.run([*command, *args], env=environ, cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=300)
        path = xcom / "return.json"
        result = json.loads(path.read_text()) if path.exists() else None
        return JobRun(returncode=done.returncode, output=done.stdout + done.stderr, result=result)

    return run


def _model() -> str:
    return f"tiny-chat-{uuid.uuid4().hex[:8]}"


def _publish(run_job: Runner, checkpoint: Path, bucket: str, model: str, revision: str, *faults: str) -> JobRun:
    published = run_job("publish_drop", str(checkpoint), "--model", model, "--revision", revision,
                        "--bucket", bucket, *faults)
    assert published.returncode == 0, published.output
    return published


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return [obj.key[len(prefix):] for obj in list_prefix(s3, bucket, prefix)]


def _receive(run_job: Runner, drop_uri: str, models: str, *extra: str) -> JobRun:
    return run_job("receive", "--drop-uri", drop_uri, "--experiment", EXPERIMENT, "--models-bucket", models, *extra)


def _stage(run_job: Runner, drop_uri: str, model: str, models: str, *extra: str,
           kill_on: str | None = None) -> JobRun:
    return run_job("stage", "--drop-uri", drop_uri, "--registered-model", model, "--hardware-classes", "cpu,h100x1",
                   "--experiment", EXPERIMENT, "--models-bucket", models, *extra, kill_on=kill_on)


def _versions(model: str) -> list[str]:
    registry = ModelRegistry(os.environ["MLFLOW_TRACKING_URI"])
    if registry.client.search_registered_models(f"name = '{model}'") == []:
        return []
    return sorted(v.version for v in registry.client.search_model_versions(f"name = '{model}'"))


@dataclass(frozen=True)
class StagedDrop:
    """A good drop published, received and staged once for the module."""

    model: str
    checkpoint: Path
    published: JobRun
    received: JobRun
    staged: JobRun


@pytest.fixture(scope="module")
def staged(run_job: Runner, models_dir: Path, buckets: tuple[str, str]) -> StagedDrop:
    drops, models = buckets
    model = _model()
    checkpoint = models_dir / "good"
    published = _publish(run_job, checkpoint, drops, model, "r1")
    drop_uri = published.result["drop_uri"]
    received = _receive(run_job, drop_uri, models)
    assert received.returncode == 0, received.output
    staged = _stage(run_job, drop_uri, model, models, "--source-etags", json.dumps(received.result["etags"]))
    assert staged.returncode == 0, staged.output
    return StagedDrop(model=model, checkpoint=checkpoint, published=published, received=received, staged=staged)


def test_good_drop_is_received_staged_and_registered_as_challenger(staged: StagedDrop, s3: Any,
                                                                    buckets: tuple[str, str]) -> None:
    drops, models = buckets
    files = sorted(p.name for p in staged.checkpoint.iterdir() if p.is_file())
    # publish: every file, then the manifest, under <model>/<revision>/
    assert _keys(s3, drops, f"{staged.model}/r1/") == sorted([*files, MANIFEST_NAME])

    received = staged.received.result
    assert received["status"] == "ok"
    assert received["weight_digest"] == staged.published.result["weight_digest"]
    assert received["runtime_image"] == IMAGE
    assert sorted(f["path"] for f in received["files"]) == files
    assert set(received["etags"]) == set(files)
    # receive's receipt, in the models bucket: the manifest and every object exactly as verified.
    assert received["receipt_uri"] == f"s3://{models}/receipts/{staged.model}/r1/receipt.json"
    receipt = read_json(s3, models, f"receipts/{staged.model}/r1/receipt.json")
    manifest_etag = s3.head_object(Bucket=drops, Key=f"{staged.model}/r1/{MANIFEST_NAME}")["ETag"].strip('"')
    assert receipt["manifest"]["etag"] == received["manifest_etag"] == manifest_etag
    assert (receipt["drop_uri"], receipt["weight_digest"]) == (received["drop_uri"], received["weight_digest"])
    assert {o["key"]: o["etag"] for o in receipt["objects"]} == {
        f"{staged.model}/r1/{path}": etag.strip('"') for path, etag in received["etags"].items()}

    result = staged.staged.result
    assert result["receipt_uri"] == received["receipt_uri"]
    assert (result["model_version"], result["created"], result["aliases"]) == ("1", True, [CHALLENGER])
    digest = received["weight_digest"]
    assert result["weight_digest"] == digest
    assert result["weights_uri"] == f"s3://{models}/models/{staged.model}/sha256-{digest}/"
    assert set(result["hardware_configs"]) == {"cpu", "h100x1"}
    assert result["runtime_version"]

    # The deployment manifest beside the weights pins the registered version.
    bucket, prefix = parse_s3_uri(result["weights_uri"])
    deployment = read_json(s3, bucket, prefix + "deployment.json")
    assert deployment == result["deployment_manifest"]
    assert deployment["model_version"] == "1"
    assert (deployment["tokenizer_hash"], deployment["chat_template_hash"]) == (
        result["tokenizer_hash"], result["chat_template_hash"])
    assert sorted(_keys(s3, bucket, prefix)) == sorted([*files, STAGED_MARKER, "deployment.json"])
    # The marker records each staged object as copied, so a later stage can tell it changed.
    marker = read_json(s3, bucket, prefix + STAGED_MARKER)
    assert marker["objects"] == {o.key[len(prefix):]: {"size": o.size, "etag": o.etag.strip('"')}
                                 for o in list_prefix(s3, bucket, prefix) if o.key[len(prefix):] in files}

    # The model version carries every pin as a tag, and its source is the staged copy.
    version = ModelRegistry(os.environ["MLFLOW_TRACKING_URI"]).get(staged.model, "1")
    assert version.source == result["weights_uri"]
    assert version.aliases == (CHALLENGER,)
    pins = {k[len(PIN_PREFIX):]: v for k, v in version.tags.items() if k.startswith(PIN_PREFIX)}
    assert pins["weight_digest"] == digest
    assert pins["runtime_image"] == IMAGE
    assert pins["tokenizer_hash"] == result["tokenizer_hash"]
    assert pins["chat_template_hash"] == result["chat_template_hash"]
    assert pins["hardware_config.cpu"] == result["hardware_configs"]["cpu"]
    assert pins["hardware_config.h100x1"] == result["hardware_configs"]["h100x1"]

    # The stage run in MLflow: tags, the pins as params, the manifest as an artifact.
    from mlflow import MlflowClient

    run = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(result["mlflow_run_id"])
    assert run.data.tags["llmops.stage"] == "stage"
    assert run.data.params["weight_digest"] == digest
    assert run.data.params["hardware_config.cpu"] == result["hardware_configs"]["cpu"]


def test_redelivered_drop_creates_no_new_version(staged: StagedDrop, run_job: Runner,
                                                 buckets: tuple[str, str]) -> None:
    drops, models = buckets
    again = _publish(run_job, staged.checkpoint, drops, staged.model, "r2")
    assert again.result["weight_digest"] == staged.received.result["weight_digest"]
    received = _receive(run_job, again.result["drop_uri"], models)
    assert received.returncode == 0, received.output
    restaged = _stage(run_job, again.result["drop_uri"], staged.model, models)
    assert restaged.returncode == 0, restaged.output
    result = restaged.result
    assert (result["model_version"], result["created"]) == ("1", False)
    assert result["staging"]["already_staged"] is True
    assert result["pins_differ"] == {}
    assert result["deployment_manifest"]["source_drop"] == staged.staged.result["drop_uri"]
    versions = ModelRegistry(os.environ["MLFLOW_TRACKING_URI"]).client.search_model_versions(
        f"name = '{staged.model}'")
    assert [v.version for v in versions] == ["1"]


@pytest.mark.parametrize(("faults", "bad_files"), [
    (("--corrupt", WEIGHTS), {WEIGHTS: "sha256_mismatch"}),
    (("--truncate", WEIGHTS), {WEIGHTS: "size_mismatch"}),
    (("--omit", "tokenizer.json", "--extra", "notes.txt"), {"tokenizer.json": "missing", "notes.txt": "extra"}),
], ids=["corrupted", "truncated", "missing-and-extra"])
def test_damaged_drop_is_quarantined_and_nothing_staged(faults: tuple[str, ...], bad_files: dict[str, str],
                                                         run_job: Runner, models_dir: Path, s3: Any,
                                                         buckets: tuple[str, str]) -> None:
    drops, models = buckets
    model = _model()
    published = _publish(run_job, models_dir / "good", drops, model, "r1", *faults)
    prefix = f"{model}/r1/"
    originals = _keys(s3, drops, prefix)

    received = _receive(run_job, published.result["drop_uri"], models)
    assert received.returncode == 2, received.output
    for path in bad_files:
        assert path in received.output, f"the message does not name {path}:\n{received.output}"
    assert "fix: publish the corrected drop again under a new revision" in received.output
    result = received.result
    assert result["status"] == "rejected"
    assert result["quarantine_uri"] == f"s3://{drops}/quarantine/{prefix}"

    # Every object copied to quarantine with a reason naming each bad file; nothing deleted.
    assert _keys(s3, drops, f"quarantine/{prefix}") == sorted([*originals, "reason.json"])
    assert _keys(s3, drops, prefix) == originals
    reason = read_json(s3, drops, f"quarantine/{prefix}reason.json")
    outcomes = {f["path"]: f["outcome"] for f in reason["bad_files"]}
    outcomes.update({e["path"]: "extra" for e in reason["extra"]})
    assert outcomes == bad_files
    assert all(any(p.startswith(f"{path}:") for p in reason["problems"]) for path in bad_files)
    # Nothing staged, no model registered.
    assert _keys(s3, models, f"models/{model}/") == []
    registry = ModelRegistry(os.environ["MLFLOW_TRACKING_URI"])
    assert registry.find_by_weight_digest(model, result["weight_digest"]) is None
    # No receipt: stage refuses the rejected drop (a verdict, not retried) and stages nothing.
    assert _keys(s3, models, f"receipts/{model}/") == []
    refused = _stage(run_job, published.result["drop_uri"], model, models)
    assert refused.returncode == 2, refused.output
    assert f"cannot stage s3://{drops}/{prefix}: receive never passed it" in refused.output
    assert "fix: run receive on the drop" in refused.output
    assert _keys(s3, models, f"models/{model}/") == [] and _versions(model) == []

    # The rejection is an MLflow run with the reason as an artifact.
    import mlflow

    run = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(result["mlflow_run_id"])
    assert (run.data.tags["llmops.stage"], run.data.tags["status"]) == ("receive", "rejected")
    assert (run.data.tags["model"], run.data.tags["revision"]) == (model, "r1")
    recorded = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/receive/reason.json")
    assert {f["path"] for f in recorded["bad_files"]} | {e["path"] for e in recorded["extra"]} == set(bad_files)


def test_invalid_manifest_is_rejected_with_the_field_named(run_job: Runner, s3: Any,
                                                           buckets: tuple[str, str]) -> None:
    drops, _ = buckets
    model = _model()
    prefix = f"{model}/r1/"
    s3.put_object(Bucket=drops, Key=prefix + "config.json", Body=b"{}")
    manifest = {"model": model, "model_family": "llama", "source": "test", "revision": "r1",
                "runtime_image": "docker.io/vllm/vllm-openai:latest", "created_at": "2026-11-23T12:00:00Z",
                "files": [{"path": "config.json", "size": 2, "sha256": "0" * 64}]}
    s3.put_object(Bucket=drops, Key=prefix + MANIFEST_NAME, Body=json.dumps(manifest).encode())

    received = run_job("receive", "--drop-uri", f"s3://{drops}/{prefix}", "--experiment", EXPERIMENT)
    assert received.returncode == 2, received.output
    assert "runtime_image" in received.output and "not pinned by digest" in received.output
    reason = read_json(s3, drops, f"quarantine/{prefix}reason.json")
    assert [p["field"] for p in reason["problems"]] == ["runtime_image"]
    assert _keys(s3, drops, prefix) == ["config.json", MANIFEST_NAME]


def test_a_drop_pinned_to_a_runtime_not_on_the_allowlist_is_refused_at_receive(run_job: Runner, s3: Any,
                                                                                models_dir: Path,
                                                                                buckets: tuple[str, str]) -> None:
    drops, models = buckets
    model = _model()
    unlisted = "docker.io/vllm/vllm-openai@sha256:" + "9e" * 32
    published = run_job("publish_drop", str(models_dir / "good"), "--model", model, "--revision", "r1",
                        "--bucket", drops, "--runtime-image", unlisted)
    assert published.returncode == 0, published.output
    received = _receive(run_job, published.result["drop_uri"], models)
    assert received.returncode == 2, received.output
    problem = received.result["problems"][0]
    assert f"runtime_image {unlisted!r} is not on the runtime allowlist" in problem
    assert os.environ["LLMOPS_RUNTIMES_FILE"] in problem and "runtime_requalify" in problem
    reason = read_json(s3, drops, f"quarantine/{model}/r1/reason.json")
    assert [p["field"] for p in reason["problems"]] == ["runtime_image"]
    assert "receipt_uri" not in received.result  # nothing for stage to stage


def test_a_runtime_whose_requalification_failed_is_refused_at_receive(run_job: Runner, s3: Any, models_dir: Path,
                                                                      buckets: tuple[str, str]) -> None:
    from llmops.core.runtimes import load_runtimes, verdict_key

    drops, models = buckets
    runtime = load_runtimes(os.environ["LLMOPS_RUNTIMES_FILE"]).require(IMAGE)
    s3.put_object(Bucket=models, Key=verdict_key(runtime), Body=json.dumps(
        {"status": "rejected", "changed_categories": ["arithmetic", "json"], "mlflow_run_id": "r123"}).encode())
    try:
        model = _model()
        published = _publish(run_job, models_dir / "good", drops, model, "r1")
        received = _receive(run_job, published.result["drop_uri"], models)
        assert received.returncode == 2, received.output
        assert "failed its re-qualification (categories that changed: arithmetic, json" in received.output
    finally:
        s3.delete_object(Bucket=models, Key=verdict_key(runtime))


def test_fetch_weights_verifies_caches_and_refuses_tampered_files(staged: StagedDrop, run_job: Runner,
                                                                  tmp_path: Path) -> None:
    result = staged.staged.result
    digest, uri = result["weight_digest"], result["weights_uri"]
    dest = tmp_path / "models" / staged.model / f"sha256-{digest}"
    args = ("--weights-uri", uri, "--dest", str(dest), "--weight-digest", digest)

    first = run_job("fetch_weights", *args)
    assert first.returncode == 0, first.output
    assert first.result["cache_hit"] is False
    checkpoint_files = sorted(p.name for p in staged.checkpoint.iterdir() if p.is_file())
    assert sorted(p.name for p in dest.iterdir()) == sorted([*checkpoint_files, ".verified"])
    assert (dest / WEIGHTS).read_bytes() == (staged.checkpoint / WEIGHTS).read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temporary folder left

    second = run_job("fetch_weights", *args)
    assert second.returncode == 0, second.output
    assert (second.result["cache_hit"], second.result["bytes_downloaded"]) == (True, 0)

    # Same size, other content: only a full re-hash sees it.
    data = bytearray((dest / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dest / WEIGHTS).write_bytes(bytes(data))
    full = run_job("fetch_weights", *args, "--full-verify")
    assert full.returncode == 3, full.output
    assert WEIGHTS in full.output and "refuses to serve" in full.output

    # A grown file fails even the cheap size check.
    with open(dest / WEIGHTS, "ab") as handle:
        handle.write(b"\0")
    cheap = run_job("fetch_weights", *args)
    assert cheap.returncode == 3, cheap.output
    assert WEIGHTS in cheap.output and "refuses to serve" in cheap.output

    # A digest the URI does not name is refused before anything is read.
    wrong = run_job("fetch_weights", "--weights-uri", uri, "--dest", str(tmp_path / "other"),
                    "--weight-digest", "0" * 64)
    assert wrong.returncode == 2, wrong.output
    assert not (tmp_path / "other").exists()


def test_fetch_weights_refuses_a_staged_copy_that_changed(staged: StagedDrop, run_job: Runner, s3: Any,
                                                          tmp_path: Path) -> None:
    result = staged.staged.result
    digest = result["weight_digest"]
    bucket, prefix = parse_s3_uri(result["weights_uri"])
    # A copy of the staged prefix under another model name, with one object changed after staging.
    other = _model()
    target = f"models/{other}/sha256-{digest}/"
    for key in _keys(s3, bucket, prefix):
        s3.copy_object(Bucket=bucket, Key=target + key, CopySource={"Bucket": bucket, "Key": prefix + key})
    s3.put_object(Bucket=bucket, Key=target + "tokenizer.json", Body=b'{"tampered": true}')
    dest = tmp_path / other

    refused = run_job("fetch_weights", "--weights-uri", f"s3://{bucket}/{target}", "--dest", str(dest),
                      "--weight-digest", digest)
    assert refused.returncode == 3, refused.output
    assert "tokenizer.json" in refused.output and "refuses to serve" in refused.output
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary download is gone too


# ---------------------------------------------------------------------------------------------
# stage trusts nothing it is told: the model, the drop, the staged copy


def test_stage_refuses_to_register_a_drop_as_another_model(run_job: Runner, models_dir: Path, s3: Any,
                                                           buckets: tuple[str, str]) -> None:
    drops, models = buckets
    model, other = _model(), _model()
    drop_uri = _publish(run_job, models_dir / "good", drops, model, "r1").result["drop_uri"]
    assert _receive(run_job, drop_uri, models).returncode == 0

    refused = _stage(run_job, drop_uri, other, models)
    assert refused.returncode == 2, refused.output
    assert f"--registered-model '{other}' is not the drop's model '{model}'" in refused.output
    assert f"fix: pass --registered-model {model}" in refused.output
    assert _keys(s3, models, f"models/{model}/") == [] and _keys(s3, models, f"models/{other}/") == []
    assert _versions(model) == [] and _versions(other) == []


def test_stage_refuses_a_drop_receive_never_passed_or_that_changed_since(run_job: Runner, models_dir: Path, s3: Any,
                                                                         buckets: tuple[str, str]) -> None:
    drops, models = buckets
    model = _model()
    drop_uri = _publish(run_job, models_dir / "good", drops, model, "r1").result["drop_uri"]
    prefix = f"{model}/r1/"

    never = _stage(run_job, drop_uri, model, models)
    assert never.returncode == 2, never.output
    assert f"receive never passed it (no receipt at s3://{models}/receipts/{model}/r1/receipt.json)" in never.output

    received = _receive(run_job, drop_uri, models)
    assert received.returncode == 0, received.output
    # After receive passed, the tokenizer is replaced (same size, other bytes) and a file is added.
    tokenizer = s3.get_object(Bucket=drops, Key=prefix + "tokenizer.json")["Body"].read()
    s3.put_object(Bucket=drops, Key=prefix + "tokenizer.json", Body=tokenizer.replace(b"a", b"b", 1))
    s3.put_object(Bucket=drops, Key=prefix + "notes.txt", Body=b"late")
    changed = _stage(run_job, drop_uri, model, models)
    assert changed.returncode == 2, changed.output
    assert f"cannot stage {drop_uri}: it is not the drop receive verified" in changed.output
    assert "tokenizer.json: rewritten since receive" in changed.output
    assert "notes.txt: added since receive" in changed.output
    assert "fix: run receive on the drop" in changed.output

    # This run's receive result (--source-etags) must be the receipt's too.
    s3.put_object(Bucket=drops, Key=prefix + "tokenizer.json", Body=tokenizer)
    s3.delete_object(Bucket=drops, Key=prefix + "notes.txt")
    again = _receive(run_job, drop_uri, models)
    assert again.returncode == 0, again.output
    stale = _stage(run_job, drop_uri, model, models, "--source-etags",
                   json.dumps({**again.result["etags"], WEIGHTS: "0" * 32}))
    assert stale.returncode == 2, stale.output
    assert f"{WEIGHTS}: this run's receive read ETag {'0' * 32}" in stale.output
    assert _keys(s3, models, f"models/{model}/") == [] and _versions(model) == []

    staged = _stage(run_job, drop_uri, model, models, "--source-etags", json.dumps(again.result["etags"]))
    assert staged.returncode == 0, staged.output
    assert _versions(model) == ["1"]


def test_a_staged_object_changed_after_staging_is_copied_again(run_job: Runner, models_dir: Path, s3: Any,
                                                               buckets: tuple[str, str]) -> None:
    drops, models = buckets
    model = _model()
    checkpoint = models_dir / "good"
    drop_uri = _publish(run_job, checkpoint, drops, model, "r1").result["drop_uri"]
    assert _receive(run_job, drop_uri, models).returncode == 0
    first = _stage(run_job, drop_uri, model, models)
    assert first.returncode == 0, first.output
    bucket, prefix = parse_s3_uri(first.result["weights_uri"])

    # Someone overwrites a staged shard with other bytes of the same size, and copies its
    # sha256 metadata too: only the record of what was copied tells it apart.
    key = prefix + WEIGHTS
    original = s3.head_object(Bucket=bucket, Key=key)
    data = bytearray((checkpoint / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=original["Metadata"])
    s3.delete_object(Bucket=bucket, Key=prefix + "tokenizer.json")

    second = _stage(run_job, drop_uri, model, models)
    assert second.returncode == 0, second.output
    staging = second.result["staging"]
    assert sorted(staging["repaired"]) == sorted([WEIGHTS, "tokenizer.json"])
    assert staging["repaired"]["tokenizer.json"] == "deleted since staging"
    assert sorted(staging["copied"]) == sorted([WEIGHTS, "tokenizer.json"])
    assert (second.result["model_version"], second.result["created"]) == ("1", False)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == (checkpoint / WEIGHTS).read_bytes()
    _assert_staged_copy_verified(s3, bucket, prefix, drop_uri)

    # Changed again, and this time the drop is gone: stage fails, naming the drop and the fix.
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=original["Metadata"])
    s3.delete_object(Bucket=drops, Key=f"{model}/r1/{WEIGHTS}")
    gone = _stage(run_job, drop_uri, model, models)
    assert gone.returncode == 2, gone.output
    assert f"{WEIGHTS}: removed since receive" in gone.output and "fix: run receive" in gone.output


def test_a_stage_killed_mid_copy_and_retried_ends_verified_with_one_version_and_one_run(
        run_job: Runner, models_dir: Path, s3: Any, buckets: tuple[str, str]) -> None:
    from mlflow import MlflowClient

    drops, models = buckets
    model = _model()
    checkpoint = models_dir / "good"
    published = _publish(run_job, checkpoint, drops, model, "r1")
    drop_uri, digest = published.result["drop_uri"], published.result["weight_digest"]
    assert _receive(run_job, drop_uri, models).returncode == 0
    prefix = f"models/{model}/sha256-{digest}/"
    files = sorted(p.name for p in checkpoint.iterdir() if p.is_file())
    airflow_run = f"manual__{uuid.uuid4().hex}"

    def attempt(number: int, kill_on: str | None = None) -> JobRun:
        return _stage(run_job, drop_uri, model, models, "--airflow-run-id", airflow_run, "--airflow-try",
                      str(number), kill_on=kill_on)

    # Try 1: the pod dies once 3 of the files are copied.
    killed = attempt(1, kill_on="CopyObject:3")
    assert killed.returncode == -signal.SIGKILL, killed.output
    assert len(_keys(s3, models, prefix)) == 3 and STAGED_MARKER not in _keys(s3, models, prefix)
    assert _versions(model) == []
    # Try 2: the copy completes and the version is registered, then the pod dies before deployment.json.
    killed = attempt(2, kill_on="PutObject:deployment.json")
    assert killed.returncode == -signal.SIGKILL, killed.output
    assert STAGED_MARKER in _keys(s3, models, prefix) and "deployment.json" not in _keys(s3, models, prefix)
    assert _versions(model) == ["1"]
    # Try 3 finishes.
    done = attempt(3)
    assert done.returncode == 0, done.output
    assert (done.result["model_version"], done.result["created"], done.result["aliases"]) == ("1", False,
                                                                                              [CHALLENGER])
    assert done.result["staging"]["copied"] == []
    assert sorted(_keys(s3, models, prefix)) == sorted([*files, STAGED_MARKER, "deployment.json"])
    _assert_staged_copy_verified(s3, models, prefix, drop_uri)
    assert _versions(model) == ["1"]

    # One MLflow run for the Airflow run, resumed by each try; the version points at it.
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`llmops.airflow_run_id` = '{airflow_run}'")
    assert [r.info.run_id for r in runs] == [done.result["mlflow_run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert (run.data.tags["llmops.airflow_try"], run.data.tags["llmops.airflow_tries"]) == ("3", "1,2,3")
    assert client.get_model_version(model, "1").run_id == run.info.run_id


def _assert_staged_copy_verified(s3: Any, bucket: str, prefix: str, drop_uri: str) -> None:
    """Every staged object hashes to the drop's manifest, and the marker records each as it is now."""
    drop_bucket, drop_prefix = parse_s3_uri(drop_uri)
    manifest = read_json(s3, drop_bucket, drop_prefix + MANIFEST_NAME)
    check = integrity.verify_drop(s3, bucket, prefix, manifest["files"], workers=4,
                                  ignore=(STAGED_MARKER, "deployment.json"))
    assert check.ok, check.message()
    marker = read_json(s3, bucket, prefix + STAGED_MARKER)
    assert marker["files"] == manifest["files"]
    listed = {o.key[len(prefix):]: o for o in list_prefix(s3, bucket, prefix)}
    assert marker["objects"] == {f["path"]: {"size": listed[f["path"]].size,
                                             "etag": listed[f["path"]].etag.strip('"')} for f in manifest["files"]}
