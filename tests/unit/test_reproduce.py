"""``python -m llmops.reproduce``: from a clean clone, the serving objects a promote applied, byte for byte.

A promote and a rollback run against a fake of the Kubernetes API server that records each
server-side apply body (there is no cluster here), an in-process S3 (moto) and a real MLflow
registry (SQLite); reproduce then renders the same version from what the registry and S3 hold.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from llmops.config import settings as settings_mod
from llmops.io import registry
from llmops.io import s3 as s3io
from llmops.refresh import actions
from llmops.reproduce import cli as reproduce
from llmops.serving.objects import LocalServingObjects
from llmops.serving.render import RenderError, serving_document
from tests.staged import stage_version
from tests.unit.test_serving_objects import FakeApiServer
from tests.unit.test_serving_render import IMAGE_A, IMAGE_B, hardware

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "llmops-models"
CLASS = "h100x1"
ENV = {"LLMOPS_LAUNCHER": "kubernetes", "LLMOPS_DEFAULT_HARDWARE_CLASS": CLASS,
       "LLMOPS_JOBS_IMAGE": "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "d4" * 32,
       "LLMOPS_VLLM_IMAGE": "docker.io/vllm/vllm-openai@sha256:" + "99" * 32}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow registry in a SQLite file (created once: the schema migration takes seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    registry.ModelRegistry(uri).client.search_registered_models()
    return uri


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[FakeApiServer, Any]]:
    """Gateway mode: the fake API server behind llmops.io.kube, moto S3 behind the Airflow connection."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LLMOPS_DATA_DIR", str(tmp_path / "data"))
    api = FakeApiServer()
    for name in ("apps_api", "core_api", "custom_objects_api"):
        monkeypatch.setattr(f"llmops.io.kube.{name}", lambda: api)
    with mock_aws():
        s3 = s3io.client()
        s3.create_bucket(Bucket=BUCKET)
        monkeypatch.setattr(s3io, "client_from_connection", lambda *a, **k: s3)
        yield api, s3


def _stage(reg: registry.ModelRegistry, s3: Any, model: str, digest: str, image: str,
           hw_hash: str | None = None) -> str:
    return stage_version(reg, s3, BUCKET, model, digest, image, runtime_version="0.11.0",
                         hardware_hashes={CLASS: hw_hash or hardware(CLASS).config_hash})


def _reproduce(capsys: pytest.CaptureFixture[str], reg: Any, s3: Any, *argv: str, **kwargs: Any) -> tuple[int, str,
                                                                                                        str]:
    code = reproduce.main(list(argv), reg=reg, s3=s3, **kwargs)
    out, err = capsys.readouterr()
    return code, out, err


def test_reproduce_prints_exactly_what_the_promote_applied_and_stored(
        cluster: tuple[FakeApiServer, Any], tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    api, s3 = cluster
    reg = registry.ModelRegistry(tracking_uri)
    version = _stage(reg, s3, "chat-promote", "ab" * 32, IMAGE_A)
    result = actions.promote(settings_mod.load(), model="chat-promote", version=version, run_id="manual__1",
                             tracking_uri=tracking_uri, models_bucket=BUCKET)

    served = result["serving"]
    assert served["action"] == "applied_stable" and "document" not in served
    stored = s3.get_object(Bucket=BUCKET, Key=f"models/chat-promote/sha256-{'ab' * 32}/serving-stable.json")
    stored_bytes = stored["Body"].read()
    assert served["document_uri"] == f"s3://{BUCKET}/models/chat-promote/sha256-{'ab' * 32}/serving-stable.json"
    assert served["sha256"] == hashlib.sha256(stored_bytes).hexdigest()
    tags = reg.get("chat-promote", version).tags
    assert tags[actions.SERVING_DOCUMENT_TAG] == served["document_uri"]
    assert tags[actions.SERVING_SHA256_TAG] == served["sha256"]

    capsys.readouterr()
    code, out, _ = _reproduce(capsys, reg, s3, "chat-promote")  # the champion, by default
    assert code == 0
    assert out.encode() == stored_bytes  # byte for byte: the stored document...
    assert out == serving_document(api.applied)  # ...and the bodies the API server received
    assert [(c[1], c[2]) for c in api.calls if c[0] == "apply"] == [
        ("Deployment", "chat-promote-stable"), ("Service", "chat-promote-stable"), ("HTTPRoute", "chat-promote")]


def test_a_rollback_serves_the_previous_versions_pinned_runtime(
        cluster: tuple[FakeApiServer, Any], tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    api, s3 = cluster
    reg = registry.ModelRegistry(tracking_uri)
    conf = settings_mod.load()
    first = _stage(reg, s3, "chat-rollback", "a1" * 32, IMAGE_A)
    second = _stage(reg, s3, "chat-rollback", "b2" * 32, IMAGE_B)
    for version in (first, second):
        actions.promote(conf, model="chat-rollback", version=version, run_id=f"manual__{version}",
                        tracking_uri=tracking_uri, models_bucket=BUCKET)
    api.applied.clear()
    rolled = actions.rollback(conf, model="chat-rollback", run_id="manual__rollback", tracking_uri=tracking_uri,
                              models_bucket=BUCKET)
    assert rolled["champion"] == first
    deployment = api.applied[0]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_A  # not B, not LLMOPS_VLLM_IMAGE
    code, out, _ = _reproduce(capsys, reg, s3, "chat-rollback", "--version", first)
    assert code == 0 and out == serving_document(api.applied)
    code, out_b, _ = _reproduce(capsys, reg, s3, "chat-rollback", "--version", second)
    assert IMAGE_B in out_b and IMAGE_A not in out_b


def test_a_changed_hardware_config_is_refused_by_promote_and_reproduce(
        cluster: tuple[FakeApiServer, Any], tracking_uri: str, capsys: pytest.CaptureFixture[str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, s3 = cluster
    reg = registry.ModelRegistry(tracking_uri)
    version = _stage(reg, s3, "chat-drift", "cc" * 32, IMAGE_A)
    configs = tmp_path / "hardware_configs"
    shutil.copytree(ROOT / "include" / "hardware_configs", configs)
    path = configs / f"{CLASS}.yaml"
    path.write_text(path.read_text().replace("max_num_seqs: 256", "max_num_seqs: 128"))
    monkeypatch.setenv("LLMOPS_HARDWARE_CONFIGS_DIR", str(configs))

    with pytest.raises(RenderError, match=rf"{CLASS}.yaml: config hash .* fix: check out the commit whose"):
        actions.promote(settings_mod.load(), model="chat-drift", version=version, run_id="manual__drift",
                        tracking_uri=tracking_uri, models_bucket=BUCKET)
    assert reg.by_alias("chat-drift", registry.CHAMPION) is None  # refused before any alias moved
    assert api.calls == []

    code, out, err = _reproduce(capsys, reg, s3, "chat-drift", "--version", version)
    assert code == reproduce.REFUSED_EXIT_CODE and out == ""
    assert f"{path}: config hash" in err and "fix: check out the commit whose" in err
    assert hardware(CLASS).config_hash in err  # the pinned hash to look for in the history


def test_apply_applies_through_the_serving_objects_of_the_mode(
        cluster: tuple[FakeApiServer, Any], tracking_uri: str, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    _, s3 = cluster
    reg = registry.ModelRegistry(tracking_uri)
    version = _stage(reg, s3, "chat-apply", "dd" * 32, IMAGE_A)
    store = LocalServingObjects(tmp_path / "store")
    code, out, err = _reproduce(capsys, reg, s3, "chat-apply", "--version", version, "--role", "canary",
                                "--extra-vllm-args", '["--enforce-eager"]', "--apply", objects=store)
    assert code == 0 and "applied 3 objects" in err
    canary = store.get("Deployment", "chat-apply-canary")
    assert canary is not None and "--enforce-eager" in canary["spec"]["template"]["spec"]["containers"][0]["args"]
    assert serving_document([store.get("HTTPRoute", "chat-apply"), canary,
                             store.get("Service", "chat-apply-canary")]) == out


def test_a_model_without_champion_or_deployment_json_is_refused_with_the_fix(
        cluster: tuple[FakeApiServer, Any], tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, s3 = cluster
    reg = registry.ModelRegistry(tracking_uri)
    version = _stage(reg, s3, "chat-missing", "ee" * 32, IMAGE_A)
    code, _, err = _reproduce(capsys, reg, s3, "chat-missing")
    assert code == 2 and "no 'champion' alias" in err and "fix: pass --version N" in err
    s3.delete_object(Bucket=BUCKET, Key=f"models/chat-missing/sha256-{'ee' * 32}/deployment.json")
    code, _, err = _reproduce(capsys, reg, s3, "chat-missing", "--version", version)
    assert code == 2 and "deployment.json: no such object" in err


def test_the_module_runs_as_a_command() -> None:
    done = subprocess.run([sys.executable, "-m", "llmops.reproduce", "--help"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "plugins")}, timeout=120, check=False)
    assert done.returncode == 0 and "--version" in done.stdout and "--apply" in done.stdout
