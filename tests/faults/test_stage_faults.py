"""Faults during ``stage``: the pod killed mid-copy, MLflow down after the version was created.

The stage job runs as its pod's main container does (``python -m llmops.jobs.stage``, the
platform's env) with its S3 or MLflow endpoint behind a :class:`FaultProxy`. A retry is the same
command again, as a retried task's new pod runs it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmops.core.manifests import STAGED_MARKER
from llmops.core.podjob import VERDICT_EXIT_CODE
from llmops.io import integrity
from llmops.io import s3 as s3io
from llmops.io.registry import CHALLENGER, PIN_PREFIX, ModelRegistry
from llmops.refresh import staging
from tests.faults.conftest import EXPERIMENT, FAIL_FAST, FaultRecord, Jobs
from tests.faults.netfault import FaultProxy

pytestmark = pytest.mark.integration

DEPLOYMENT = "deployment.json"


def _stage_args(drop: Drop, models_bucket: str, attempt: int) -> list[str]:
    """The stage task's command line (plan.stage_job), for try ``attempt`` of one Airflow run."""
    return ["--drop-uri", drop.uri, "--registered-model", drop.model, "--hardware-classes", "cpu",
            "--experiment", EXPERIMENT, "--models-bucket", models_bucket, "--source-etags", json.dumps(drop.etags),
            "--airflow-run-id", f"faults__{drop.model}", "--airflow-try", str(attempt)]


def _versions(registry: ModelRegistry, model: str) -> list[Any]:
    return sorted(registry.client.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version))


def _pins(registry: ModelRegistry, model: str, version: str) -> dict[str, str]:
    tags = registry.get(model, version).tags
    return {k[len(PIN_PREFIX):]: v for k, v in tags.items() if k.startswith(PIN_PREFIX)}


def _assert_staged_and_registered_once(s3: Any, registry: ModelRegistry, model: str, models_bucket: str,
                                       manifest: Any, result: dict[str, Any]) -> None:
    """The final state: a complete, verified staged copy; one version, with every pin and alias."""
    prefix = staging.staged_prefix(model, manifest.weight_digest)
    check = integrity.verify_drop(s3, models_bucket, prefix, manifest.files, workers=2,
                                  ignore=(STAGED_MARKER, DEPLOYMENT))
    assert check.ok, check.message()
    assert not check.extra, check.extra
    marker = s3io.read_json(s3, models_bucket, prefix + STAGED_MARKER)
    assert marker["weight_digest"] == manifest.weight_digest
    assert not s3.list_multipart_uploads(Bucket=models_bucket, Prefix=prefix).get("Uploads")
    versions = _versions(registry, model)
    assert [v.version for v in versions] == ["1"], "exactly one model version for these weights"
    assert result["model_version"] == "1"
    version = registry.get(model, "1")
    assert version.aliases == (CHALLENGER,)
    assert version.source == result["weights_uri"]
    pins = _pins(registry, model, "1")
    assert pins["weight_digest"] == manifest.weight_digest
    assert set(pins) >= {"weight_digest", "weights_uri", "runtime_image", "runtime_version", "tokenizer_hash",
                         "chat_template_hash", "hardware_config.cpu"}
    deployment = s3io.read_json(s3, models_bucket, prefix + DEPLOYMENT)
    assert deployment["model_version"] == "1" and deployment["weight_digest"] == manifest.weight_digest


@dataclass(frozen=True)
class Drop:
    """A published and received drop of a new model."""

    model: str
    uri: str
    manifest: Any
    etags: dict[str, str]


@pytest.fixture
def drop(platform, publish, models_dir: Path, jobs: Jobs, s3: Any, buckets: tuple[str, str]) -> Drop:
    """A good drop of a new model, passed by receive (its receipt written)."""
    model = f"fault-stage-{uuid.uuid4().hex[:8]}"
    uri = publish(models_dir / "good", model, "r1")
    received = jobs.run("receive", "--drop-uri", uri, "--experiment", EXPERIMENT, "--models-bucket", buckets[1])
    assert received.returncode == 0, received.output
    bucket, prefix = s3io.parse_s3_uri(uri)
    return Drop(model, uri, staging.read_drop_manifest(s3, bucket, prefix), received.result["etags"])


def test_stage_pod_killed_mid_copy(fault: FaultRecord, platform, drop, jobs: Jobs, s3: Any,
                                   buckets: tuple[str, str]) -> None:
    """stage pod SIGKILLed mid-copy (S3 copies stalled after two objects), then retried"""
    model, manifest = drop.model, drop.manifest
    _, models = buckets
    registry = ModelRegistry(platform.endpoints.mlflow_url)
    prefix = staging.staged_prefix(model, manifest.weight_digest)
    with FaultProxy(platform.endpoints.s3_port) as proxy:
        # The third server-side copy request stalls: two objects are copied, the rest are not.
        proxy.arm(b"x-amz-copy-source:", after=3, mode="blackhole")
        proc, xcom = jobs.start("stage", *_stage_args(drop, models, 1), env={"AWS_ENDPOINT_URL": proxy.url})
        jobs.await_outage(proxy, proc, xcom)
        time.sleep(1.0)  # the copies already sent land in S3
        os.killpg(proc.pid, signal.SIGKILL)  # the pod is killed: every container, no grace
        fault.inject()
        killed = jobs.finish(proc, xcom)
    assert killed.returncode == -signal.SIGKILL and killed.result is None
    before_retry = {o.key[len(prefix):]: o.etag for o in s3io.list_prefix(s3, models, prefix)}
    assert 0 < len(before_retry) < len(manifest.files), (
        f"not killed mid-copy: {sorted(before_retry)}\n{killed.output[-3000:]}")
    assert STAGED_MARKER not in before_retry
    assert _versions(registry, model) == [], "nothing may be registered before the copy completed"

    fault.remove()
    retried = jobs.run("stage", *_stage_args(drop, models, 2))
    assert retried.returncode == 0, retried.output
    _assert_staged_and_registered_once(s3, registry, model, models, manifest, retried.result)
    # Finished copies were kept (recognised by size and SHA-256), the rest copied once.
    staged = retried.result["staging"]
    assert set(staged["skipped"]) == set(before_retry)
    assert sorted([*staged["copied"], *staged["skipped"]]) == sorted(f.path for f in manifest.files)
    fault.recover(f"retry staged {len(staged['copied'])} more objects, kept {len(staged['skipped'])}; "
                  f"1 version, verified")


def test_mlflow_down_during_stage(fault: FaultRecord, platform, drop, jobs: Jobs, s3: Any,
                                  buckets: tuple[str, str]) -> None:
    """MLflow goes down during stage, right after it created the model version (the answer is lost)"""
    model, manifest = drop.model, drop.manifest
    _, models = buckets
    registry = ModelRegistry(platform.endpoints.mlflow_url)
    with FaultProxy(platform.endpoints.mlflow_port) as proxy:
        proxy.arm(b"model-versions/create", on_answer=True, mode="refuse")
        failed = jobs.run("stage", *_stage_args(drop, models, 1),
                          env={"MLFLOW_TRACKING_URI": proxy.url, **FAIL_FAST})
        assert proxy.outages, f"the stage job never created the version:\n{failed.output[-3000:]}"
        fault.injected = proxy.outages[0].started
        assert failed.returncode not in (0, VERDICT_EXIT_CODE), (
            f"an MLflow outage must fail stage retryably (exit code {failed.returncode}):\n{failed.output}")
        assert failed.result is None
        # Nothing half-done: any version MLflow created carries every pin (created with its tags).
        for version in _versions(registry, model):
            pins = _pins(registry, model, version.version)
            assert pins.get("weight_digest") == manifest.weight_digest, pins
            assert {"runtime_image", "tokenizer_hash", "chat_template_hash", "hardware_config.cpu"} <= set(pins)
        created_before_retry = len(_versions(registry, model))

        proxy.restore()  # MLflow is back
        fault.remove()
        retried = jobs.run("stage", *_stage_args(drop, models, 2), env={"MLFLOW_TRACKING_URI": proxy.url})
    assert retried.returncode == 0, retried.output
    _assert_staged_and_registered_once(s3, registry, model, models, manifest, retried.result)
    assert retried.result["created"] is (created_before_retry == 0)
    fault.recover(f"attempt failed with exit {failed.returncode} ({created_before_retry} version left, pinned); "
                  f"retry found it: 1 version, alias challenger")


def test_mlflow_blip_during_stage(fault: FaultRecord, platform, drop, jobs: Jobs, s3: Any,
                                  buckets: tuple[str, str]) -> None:
    """MLflow down 5 s right after it created the model version; MLflow's own client retries (defaults)"""
    model, manifest = drop.model, drop.manifest
    _, models = buckets
    registry = ModelRegistry(platform.endpoints.mlflow_url)
    with FaultProxy(platform.endpoints.mlflow_port) as proxy:
        proxy.arm(b"model-versions/create", on_answer=True, mode="refuse", seconds=5.0)
        staged = jobs.run("stage", *_stage_args(drop, models, 1), env={"MLFLOW_TRACKING_URI": proxy.url})
        outage = proxy.wait_outage(1)
    fault.injected, fault.removed = outage.started, outage.ended
    assert staged.returncode == 0, staged.output
    _assert_staged_and_registered_once(s3, registry, model, models, manifest, staged.result)
    fault.recover("stage rode out the outage in MLflow's client retries: 1 version")
