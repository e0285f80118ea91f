"""The benchmark pod jobs: vLLM sidecar with the class config, the client in the vLLM image,
the code and weight init containers, and valid restricted Kubernetes pods."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from llmops.benchmarks import plan
from llmops.benchmarks.workloads import load_matrix
from llmops.config import settings
from llmops.config.kubernetes import KUBERNETES_MIN_VERSION
from llmops.core.hardware import load_all, load_hardware_class
from llmops.core.podjob import PodJob
from llmops.serving.weights import fetch_container, model_dir

VLLM_IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "c3" * 32
JOBS_IMAGE = "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "d4" * 32
MATRICES = settings.PROJECT_ROOT / "include" / "benchmarks"
DIGEST = "ab" * 32


def _job(hw_name: str, target: dict, overrides=(), fetch=None) -> PodJob:
    conf = settings.load()
    hw = load_hardware_class(hw_name, conf.hardware_configs_dir)
    return plan.benchmark_pod_job(hw=hw, matrix=load_matrix(hw_name, MATRICES), target=target,
                                  vllm_image=VLLM_IMAGE, jobs_image=JOBS_IMAGE, fetch=fetch,
                                  vllm_overrides=overrides)


def _champion(model: str = "llama") -> dict:
    return plan.registry_target("champion", model, "7", f"s3://m/models/{model}/sha256-{DIGEST}/", DIGEST,
                                model_dir(model, DIGEST), "llama-3.1-8b-instruct")


def test_default_target_serves_the_configured_checkpoint() -> None:
    target = plan.default_target("tiny-chat", "tiny-chat/good")
    assert target == {"role": "default", "model": "tiny-chat", "version": "default",
                      "model_key": "path:tiny-chat/good", "model_path": "/models/tiny-chat/good",
                      "model_family": "tiny-chat"}
    assert plan.served_name(target) == "tiny-chat-default"
    assert plan.served_name(_champion()) == "llama-v7"


def test_cpu_pod_runs_the_client_in_the_vllm_image_beside_the_class_config() -> None:
    job = _job("cpu", plan.default_target("tiny-chat", "tiny-chat/good"))
    assert job.name == "bench-cpu-default"
    assert job.main.image == VLLM_IMAGE and job.main.command == ("python3", "-m", "llmops.jobs.benchmark")
    assert job.main.env["PYTHONPATH"] == plan.CODE_MOUNT and job.main.env["LLMOPS_RUNTIME_IMAGE"] == VLLM_IMAGE
    assert job.main.env["LLMOPS_HARDWARE_CLASS"] == "cpu"
    (code,) = job.init_containers
    assert code.image == JOBS_IMAGE and code.args[-1] == f"{plan.CODE_MOUNT}/"
    (vllm,) = job.sidecars
    assert vllm.args[vllm.args.index("--max-num-seqs") + 1] == "64"
    args = list(job.main.args)
    workloads = json.loads(args[args.index("--workloads") + 1])
    assert [w["input_len"] for w in workloads] == [w.input_len for w in load_matrix("cpu", MATRICES).workloads]
    assert args[args.index("--goodput") + 1:] == ["ttft:1000", "tpot:100"]
    assert args[args.index("--tokenizer") + 1] == "/models/tiny-chat/good"


def test_what_if_overrides_replace_the_class_flag_on_the_server_only() -> None:
    job = _job("cpu", plan.default_target("tiny-chat", "tiny-chat/good"), overrides=["--max-num-seqs", "32"])
    vllm = job.sidecars[0]
    assert vllm.args.count("--max-num-seqs") == 1 and vllm.args[vllm.args.index("--max-num-seqs") + 1] == "32"
    args = list(job.main.args)
    assert json.loads(args[args.index("--vllm-overrides") + 1]) == ["--max-num-seqs", "32"]


def test_a_matrix_of_another_class_is_refused() -> None:
    conf = settings.load()
    with pytest.raises(ValueError, match="is for 'cpu', not 'h100x1'"):
        plan.benchmark_pod_job(hw=load_hardware_class("h100x1", conf.hardware_configs_dir),
                               matrix=load_matrix("cpu", MATRICES), target=_champion(),
                               vllm_image=VLLM_IMAGE, jobs_image=JOBS_IMAGE)


@pytest.mark.parametrize("hw_name", ["h100x1", "b200x4"])
def test_registry_targets_render_valid_restricted_gpu_pods(monkeypatch, hw_name: str) -> None:
    from airflow.sdk import DAG

    from llmops.launch.kubernetes import make_kubernetes_task, render_pod_manifest

    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    conf = settings.load()
    target = _champion()
    job = _job(hw_name, target, fetch=fetch_container(conf, target, "llama", None))
    with DAG(dag_id=f"bench_{hw_name}", schedule=None):
        task = make_kubernetes_task(PodJob.from_dict(job.to_dict()), task_id="bench")
    manifest = render_pod_manifest(task, {"params": {}})
    kubernetes_validate.validate(manifest, KUBERNETES_MIN_VERSION, strict=True)
    spec = manifest["spec"]
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["llmops-code", "fetch-weights", "vllm"]
    vllm = spec["initContainers"][2]
    assert vllm["restartPolicy"] == "Always" and vllm["args"][0] == model_dir("llama", DIGEST)
    hw = load_hardware_class(hw_name, conf.hardware_configs_dir)
    assert int(vllm["resources"]["limits"]["nvidia.com/gpu"]) == hw.gpu.count
    main = next(c for c in spec["containers"] if c["image"] == VLLM_IMAGE)  # the KPO names it "base"
    assert main["image"] == VLLM_IMAGE
    assert {"name": "llmops-code", "mountPath": plan.CODE_MOUNT} in [
        {k: m[k] for k in ("name", "mountPath")} for m in main["volumeMounts"]]
    assert manifest["metadata"]["labels"][plan.PIPELINE_LABEL] == "benchmarks"


def test_pool_groups_follow_the_hardware_classes() -> None:
    classes = load_all(settings.load().hardware_configs_dir)
    groups = plan.pool_groups(classes.values())
    assert groups["cpu-vllm_x1"] == ("cpu-vllm", 1)
    assert groups["gpu-h100_x2"] == ("gpu-h100", 2) and groups["gpu-h100_x1"] == ("gpu-h100", 1)
    assert groups["gpu-b200_x4"] == ("gpu-b200", 4)
    assert set(groups) == {plan.pool_group(hw) for hw in classes.values()}


def test_a_model_of_another_family_is_not_served_on_a_class() -> None:
    conf = settings.load()
    cpu = load_hardware_class("cpu", conf.hardware_configs_dir)
    reason = plan.family_mismatch(cpu, _champion())
    assert reason is not None and "sized for tiny-chat" in reason
    assert plan.family_mismatch(cpu, plan.default_target("tiny-chat", "tiny-chat/good")) is None
    no_family = {k: v for k, v in _champion().items() if k != "model_family"}
    assert plan.family_mismatch(cpu, no_family) is None


def test_pod_names_are_dns_labels() -> None:
    conf = settings.load()
    hw = load_hardware_class("h100x2", conf.hardware_configs_dir)
    assert plan.pod_name(hw, {"role": "Challenger_X"}) == "bench-h100x2-challenger-x"
