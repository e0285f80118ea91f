"""weekly_eval_drift's planned pod jobs render to valid restricted pods; the final check's verdicts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import kubernetes_validate
import pytest

from llmops.config.kubernetes import KUBERNETES_MIN_VERSION

ROOT = Path(__file__).resolve().parents[2]
VLLM_IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "c3" * 32
JOBS_IMAGE = "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "d4" * 32
DIGEST_A, DIGEST_B = "ab" * 32, "cd" * 32
# Each version pinned to its own runtime, neither the platform default (VLLM_IMAGE).
RUNTIME_A = "docker.io/vllm/vllm-openai@sha256:" + "a" * 64
RUNTIME_B = "docker.io/vllm/vllm-openai@sha256:" + "b" * 64
TARGETS = [{"role": "champion", "alias": "champion", "version": "3", "weight_digest": DIGEST_A,
            "weights_uri": f"s3://llmops-models/models/tiny-chat/sha256-{DIGEST_A}/", "runtime_image": RUNTIME_A,
            "runtime_version": "0.32.0"},
           {"role": "previous", "alias": "previous", "version": "1", "weight_digest": DIGEST_B,
            "weights_uri": f"s3://llmops-models/models/tiny-chat/sha256-{DIGEST_B}/", "runtime_image": RUNTIME_B,
            "runtime_version": "0.31.0"}]
EVALSETS = [{"name": "synthetic_chat_v1", "config": "include/evalsets/synthetic_chat_v1.yaml"},
            {"name": "tiny_chat_weekly_v1", "config": "include/evalsets/tiny_chat_weekly_v1.yaml"}]


def _manifest(job: dict, task_id: str) -> dict:
    from airflow.sdk import DAG

    from llmops.core.podjob import PodJob
    from llmops.launch.kubernetes import make_kubernetes_task, render_pod_manifest

    with DAG(dag_id=f"drift_{task_id}", schedule=None):
        task = make_kubernetes_task(PodJob.from_dict(job), task_id=task_id)
    manifest = render_pod_manifest(task, {"params": {}})
    kubernetes_validate.validate(manifest, KUBERNETES_MIN_VERSION, strict=True)
    return manifest


@pytest.fixture
def conf(monkeypatch):
    from llmops.config import settings

    monkeypatch.setenv("LLMOPS_VLLM_IMAGE", VLLM_IMAGE)
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    return settings.load()


@pytest.mark.parametrize("hardware_class", ["cpu", "h100x1"])
def test_one_eval_pod_per_alias_and_eval_set_serving_the_pinned_weights(conf, hardware_class: str) -> None:
    from llmops.core.hardware import load_hardware_class
    from llmops.drift import plan as drift_plan

    hw = load_hardware_class(hardware_class, conf.hardware_configs_dir)
    jobs = drift_plan.evaluation_jobs(conf, hw, model="tiny-chat", targets=TARGETS, evalsets=EVALSETS, week="2026-W48",
                                    limit_per_category=0, s3_endpoint=None, tracking_uri="http://mlflow:5000",
                                    airflow_run_id="scheduled__2026-11-30")
    assert [j["name"] for j in jobs] == ["drift-champion-synthetic-chat-v1", "drift-champion-tiny-chat-weekly-v1",
                                         "drift-previous-synthetic-chat-v1", "drift-previous-tiny-chat-weekly-v1"]
    for job, (target, evalset) in zip(jobs, [(t, e) for t in TARGETS for e in EVALSETS], strict=True):
        spec = _manifest(job, "evaluate")["spec"]
        fetch, vllm = spec["initContainers"]
        assert fetch["args"][fetch["args"].index("--weight-digest") + 1] == target["weight_digest"]
        assert vllm["restartPolicy"] == "Always"
        assert vllm["image"] == target["runtime_image"] != VLLM_IMAGE  # the pin, not the platform default
        assert vllm["args"][0] == f"/models/tiny-chat/sha256-{target['weight_digest']}"
        args = spec["containers"][0]["args"]
        assert args[args.index("--evalset") + 1] == evalset["config"]
        assert args[args.index("--experiment") + 1] == "llmops-eval-drift"
        tags = {args[i + 1] for i, a in enumerate(args) if a == "--tag"}
        assert {f"alias={target['alias']}", f"model_version={target['version']}", "week=2026-W48",
                "llmops.stage=weekly_eval", "model=tiny-chat", f"runtime_image={target['runtime_image']}",
                f"runtime_image_digest=sha256:{target['runtime_image'].rsplit(':', 1)[1]}",
                f"runtime_version={target['runtime_version']}", f"hardware_config_hash={hw.config_hash}"} <= tags


def test_report_and_hygiene_pods_are_valid(conf) -> None:
    from llmops.drift import plan as drift_plan

    evaluations = [{"mlflow_run_id": "r1", "evalset": "synthetic_chat_v1", "evalset_revision": "0500",
                    "tags": {"alias": "champion"}, "scores": {"big": "dropped from the args"}}]
    job = drift_plan.report_job(conf, model="tiny-chat", week="2026-W48", evaluations=evaluations, evalsets=EVALSETS,
                              weeks=8, threshold=0.05, fail_on="regression", categories=["reverse"],
                              hardware_class="cpu", tracking_uri="http://mlflow:5000", airflow_run_id="r")
    args = _manifest(job, "report")["spec"]["containers"][0]["args"]
    assert json.loads(args[args.index("--evaluations") + 1]) == [{k: v for k, v in evaluations[0].items()
                                                                  if k != "scores"}]
    assert args[args.index("--categories") + 1] == "reverse"
    hygiene = drift_plan.hygiene_job(conf).to_dict()
    assert hygiene["main"]["args"][:2] == ["--evalsets-dir", "include/evalsets"]


def test_week_of_a_run() -> None:
    from llmops.drift.plan import week_of

    monday = datetime(2026, 11, 30, 6, tzinfo=UTC)
    assert week_of(monday, datetime(2026, 12, 9, tzinfo=UTC)) == "2026-W49"
    assert week_of(None, monday) == "2026-W49"


def test_final_check_fails_only_on_a_flagged_report() -> None:
    from llmops.drift.plan import DriftAlert, check

    quiet = {"model": "m", "week": "2026-W48", "drift_detected": False, "alerts": [], "report_run_id": "r"}
    assert check(quiet) == quiet
    loud = {**quiet, "drift_detected": True, "alerts": ["set/reverse: champion v2 moved -0.900 vs 2026-W47 (v1)"]}
    with pytest.raises(DriftAlert, match=r"(?s)MLflow run r.*- set/reverse: champion v2 moved -0.900"):
        check(loud)
    with pytest.raises(DriftAlert, match="no report"):
        check(None)
