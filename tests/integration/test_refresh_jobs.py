"""The refresh pipeline's pod jobs as real processes against the embedded platform.

``publish_drop`` -> ``receive`` -> ``stage`` -> ``fetch_weights`` run as ``python -m
llmops.jobs.<name>`` (what both launchers do) against the session's moto S3 endpoint and MLflow
server, on the model maker's ``good`` checkpoint. Each test uses its own model name, so the
tests are independent within the shared session platform.
"""

from __future__ import annotations

import json
import os
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
from llmops.io import s3 as s3io
from llmops.io.registry import CHALLENGER, PIN_PREFIX, ModelRegistry
from llmops.io.s3 import list_prefix, parse_s3_uri, read_json

pytestmark = pytest.mark.integration

IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "c" * 64
EXPERIMENT = "llmops-refresh-tests"
WEIGHTS = "model.safetensors"


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

    def run(name: str, *args: str, env: dict[str, str] | None = None) -> JobRun:
        xcom = tmp_path_factory.mktemp(f"xcom-{name}")
        environ = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "plugins"), "LLMOPS_XCOM_DIR": str(xcom),
                   "LLMOPS_VLLM_IMAGE": IMAGE, **(env or {})}
        done = subprocess.run([sys.executable, "-m", f"llmops.jobs.{name}", *args], env=environ, cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=300)
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
    received = run_job("receive", "--drop-uri", drop_uri, "--experiment", EXPERIMENT)
    assert received.returncode == 0, received.output
    staged = run_job("stage", "--drop-uri", drop_uri, "--registered-model", model, "--hardware-classes",
                     "cpu,h100x1", "--experiment", EXPERIMENT, "--models-bucket", models,
                     "--source-etags", json.dumps(received.result["etags"]))
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

    result = staged.staged.result
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
    received = run_job("receive", "--drop-uri", again.result["drop_uri"], "--experiment", EXPERIMENT)
    assert received.returncode == 0, received.output
    restaged = run_job("stage", "--drop-uri", again.result["drop_uri"], "--registered-model", staged.model,
                       "--hardware-classes", "cpu,h100x1", "--experiment", EXPERIMENT, "--models-bucket", models)
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

    received = run_job("receive", "--drop-uri", published.result["drop_uri"], "--experiment", EXPERIMENT)
    assert received.returncode == 2, received.output
    for path in bad_files:
        assert path in received.output, f"the message does not name {path}:\n{received.output}"
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
