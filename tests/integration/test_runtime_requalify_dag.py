"""The runtime_requalify DAG on the embedded platform: a new runtime identical to the pinned one
moves the champion's pin; a runtime that changes answers is rejected, naming the category.

Two local runtimes stand in for new vLLM images (``LLMOPS_LOCAL_RUNTIMES`` maps an image
repository to a ``bin`` folder): ``vllm-cpu-rebuild`` is the real ``.venv-vllm/bin`` under a new
name and digest (a rebuild of the same runtime), ``vllm-cpu-bf16`` a ``vllm`` wrapper that
appends ``--dtype bfloat16`` (the later flag wins in vLLM's argparse; the cpu class serves
float32). Measured on the tiny model's ``good`` checkpoint, 400 items at concurrency 8 and 1:
bfloat16 changes 2 answers (arithmetic-0022 and copy-0083), the same ones on every repeat,
float32 none between repeats; ``limit_per_category`` 23 is the smallest that includes
arithmetic-0022 (the eval takes each category's first items).

One champion, one detection run for both runtimes: the champion is evaluated once on its
pinned runtime and once on each new one (three vLLM starts).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import run_job_cli

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[2]
REBUILD = "llmops.local/vllm-cpu-rebuild@sha256:" + "1d" * 32
BF16 = "llmops.local/vllm-cpu-bf16@sha256:" + "bf" * 32
LIMIT_PER_CATEGORY = 23


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "runtime_requalify.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["runtime_requalify"]


def _champion(platform, models_dir: Path, model: str, image: str, tmp_path: Path) -> str:
    """The ``good`` checkpoint received, staged (pinned to ``image``) and promoted: the champion's version."""
    from llmops.embedded.scenario import publish
    from llmops.io.registry import ModelRegistry

    drop = publish(models_dir / "good", model, "r1", image, tmp_path)["drop_uri"]
    received = run_job_cli("receive", "--drop-uri", drop, "--models-bucket", "llmops-models", xcom=tmp_path / "receive")
    staged = run_job_cli("stage", "--drop-uri", drop, "--registered-model", model, "--hardware-classes", "cpu,h100x1",
                  "--models-bucket", "llmops-models", "--source-etags", json.dumps(received["etags"]),
                  "--runtime-version", received["runtime"]["vllm_version"], xcom=tmp_path / "stage")
    ModelRegistry(platform.endpoints.mlflow_url).promote(model, staged["model_version"])
    return staged["model_version"]


def _bf16_bin(vllm_runtime: Path, where: Path) -> Path:
    """A runtime whose ``vllm`` serves bfloat16 whatever it is asked: the real one, ``--dtype bfloat16`` last."""
    where.mkdir(parents=True)
    wrapper = where / "vllm"
    wrapper.write_text(f'#!/bin/sh\nexec "{vllm_runtime / "bin" / "vllm"}" "$@" --dtype bfloat16\n')
    wrapper.chmod(0o755)
    return where


def test_identical_runtime_moves_the_pin_and_one_changing_answers_is_rejected(
        airflow_db, platform, models_dir, vllm_runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import mlflow

    from llmops.core.runtimes import load_runtimes, verdict_key
    from llmops.io import s3 as s3io
    from llmops.io.registry import ModelRegistry
    from llmops.refresh.runtime_requalify import SEEN_KEY

    pinned_image = platform.local_images()["LLMOPS_VLLM_IMAGE"]
    model = f"requalify-{uuid.uuid4().hex[:8]}"
    version = _champion(platform, models_dir, model, pinned_image, tmp_path)
    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    reg = ModelRegistry(platform.endpoints.mlflow_url)
    try:
        # The first detection records the allowlist as the baseline and evaluates nothing.
        baseline = _dag().test(run_conf={"model": model})
        assert baseline.state == "success"
        seen = s3io.read_json(s3, "llmops-models", SEEN_KEY)
        assert {v["outcome"] for v in seen["runtimes"].values()} == {"baseline"}
        states = {ti.task_id: ti.state for ti in baseline.get_task_instances()}
        assert states["evaluate"] == "skipped" and states["judge"] == "skipped"

        # Two runtimes are added to the allowlist (the shipped one's entries kept).
        allowlist = tmp_path / "runtimes.yaml"
        allowlist.write_text(Path(os.environ["LLMOPS_RUNTIMES_FILE"]).read_text() + "".join(
            f"  - image: {image}\n    vllm_version: \"0.32.0+cpu\"\n    accelerator: cpu\n    notes: {notes}\n"
            for image, notes in ((REBUILD, "the same runtime rebuilt"), (BF16, "serves bfloat16"))))
        monkeypatch.setenv("LLMOPS_RUNTIMES_FILE", str(allowlist))
        monkeypatch.setenv("LLMOPS_LOCAL_RUNTIMES", json.dumps({
            "llmops.local/vllm-cpu-rebuild": str(vllm_runtime / "bin"),
            "llmops.local/vllm-cpu-bf16": str(_bf16_bin(vllm_runtime, tmp_path / "bf16-bin"))}))
        listed = load_runtimes(allowlist)
        rebuild, bf16 = listed.find(REBUILD), listed.find(BF16)

        # A manual run naming a runtime that is not listed fails at once, naming the allowlist.
        refused = _dag().test(run_conf={"runtime_image": "llmops.local/other@sha256:" + "0" * 64, "model": model})
        assert refused.state == "failed"
        assert {ti.task_id for ti in refused.get_task_instances() if ti.state == "failed"} == {"detect"}

        run = _dag().test(run_conf={"model": model, "limit_per_category": LIMIT_PER_CATEGORY})
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        # The rejected runtime fails the run at check_verdicts; the qualified one's pin moved first.
        assert run.state == "failed", states
        assert {task for task, state in states.items() if state == "failed"} == {"check_verdicts"}, states
        assert states["move_pins"] == states["rebaseline"] == states["record_seen"] == "success"
        evaluations = [ti for ti in run.get_task_instances() if ti.task_id == "evaluate"]
        assert len(evaluations) == 3  # the champion once on its pinned runtime, once on each new one

        # (b) bfloat16: rejected, its verdict where receive reads it, naming the category that changed.
        rejected = s3io.read_json(s3, "llmops-models", verdict_key(bf16))
        assert rejected["status"] == "rejected" and rejected["changed_categories"] == ["arithmetic"]
        assert rejected["model"] == model and rejected["champion_version"] == version
        assert rejected["runtime"] == bf16.to_dict()
        assert rejected["per_category"]["arithmetic"]["changed_answers"] >= 1
        assert rejected["per_category"]["copy"]["changed"] is False
        mlflow.set_tracking_uri(platform.endpoints.mlflow_url)
        verdict_run = mlflow.get_run(rejected["mlflow_run_id"])
        assert verdict_run.data.tags["passed"] == "false"
        assert verdict_run.data.tags["runtime_image"] == BF16
        assert verdict_run.data.tags["changed_categories"] == "arithmetic"
        check = next(ti for ti in run.get_task_instances() if ti.task_id == "check_verdicts")
        assert check.try_number == 1  # a verdict: not retried

        # The eval runs say what differed: the runtime identity of each.
        eval_runs = mlflow.search_runs(experiment_names=["llmops-runtime-requalify"], output_format="list",
                                       filter_string=f"tags.`llmops.stage` = 'runtime_requalify' and "
                                                     f"tags.model = '{model}'")
        assert sorted(r.data.tags["runtime_image"] for r in eval_runs) == sorted([pinned_image, REBUILD, BF16])
        assert len({r.data.tags["runtime_identity"] for r in eval_runs}) == 3

        # (a) the rebuild: qualified, and the champion's pin moved to it.
        qualified = s3io.read_json(s3, "llmops-models", verdict_key(rebuild))
        assert qualified["status"] == "qualified" and qualified["changed_categories"] == []
        champion = reg.get(model, version)
        assert champion.tags["pin.runtime_image"] == REBUILD
        assert champion.tags["pin.runtime_image_digest"] == rebuild.digest
        assert champion.tags["pin.runtime_version"] == "0.32.0+cpu"
        assert champion.tags["llmops.runtime_identity"] == rebuild.identity
        bucket, prefix = s3io.parse_s3_uri(champion.source)
        manifest = s3io.read_json(s3, bucket, prefix + "deployment.json")
        old = s3io.read_json(s3, bucket, prefix + "deployment.1.json")
        assert manifest["runtime_image"] == REBUILD and old["runtime_image"] == pinned_image
        assert {k: v for k, v in manifest.items() if k not in ("runtime_image", "hardware_configs")} == {
            k: v for k, v in old.items() if k not in ("runtime_image", "hardware_configs")}
        assert manifest["hardware_configs"] == {"cpu": champion.tags["pin.hardware_config.cpu"]}
        assert set(old["hardware_configs"]) == {"cpu", "h100x1"}
        assert "pin.hardware_config.h100x1" not in champion.tags, "re-qualified on cpu only"
        current = s3io.read_json(s3, "llmops-models", f"deployments/{model}/current.json")
        assert current["action"] == "runtime_upgrade" and current["pins"]["runtime_image"] == REBUILD
        document, _ = s3io.read_bytes(s3, *s3io.parse_s3_uri(champion.tags["llmops.serving_document"]),
                                      max_bytes=1 << 20)
        assert REBUILD in document.decode(), "the serving objects were re-applied on the new runtime"

        # The nightly benchmarks are told: the asset event names the runtime change.
        rebaseline = next(ti for ti in run.get_task_instances() if ti.task_id == "rebaseline")
        extra = rebaseline.xcom_pull(task_ids="rebaseline")
        assert extra["classes"] == ["cpu"] and REBUILD[:48] in extra["changes"][0]
        assert extra["runtime_requalified"][0]["identity"] == rebuild.identity

        # Both runtimes are seen now: the next detection evaluates nothing.
        seen = s3io.read_json(s3, "llmops-models", SEEN_KEY)["runtimes"]
        assert seen[rebuild.identity]["outcome"] == "qualified" and seen[bf16.identity]["outcome"] == "rejected"
        again = _dag().test(run_conf={"model": model})
        states = {ti.task_id: ti.state for ti in again.get_task_instances()}
        assert again.state == "success" and states["evaluate"] == "skipped", states
    finally:
        shutil.rmtree(Path(os.environ["LLMOPS_MODELS_DIR"]) / model, ignore_errors=True)
