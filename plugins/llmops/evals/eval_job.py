"""The evaluation pod job: vLLM serves a checkpoint on a hardware class, the eval job scores it."""

from __future__ import annotations

from llmops.config.images import image_digest
from llmops.config.settings import Settings
from llmops.core.hardware import HardwareClass
from llmops.core.job_container import MLFLOW_URI_TEMPLATE, jobs_container
from llmops.core.podjob import PodJob
from llmops.serving.vllm import serving_pod_job, vllm_startup_budget_s

EVAL_BUDGET_S = 1800
"""What the eval job itself may take once vLLM is healthy: every item, plus the latency rounds."""


def eval_pod_timeout_s(hw: HardwareClass) -> int:
    """The deadline of an eval pod on ``hw``: vLLM's start-up on the class plus the eval's budget."""
    return vllm_startup_budget_s(hw) + EVAL_BUDGET_S


def evaluation_pod_job(settings: Settings, hw: HardwareClass, *, name: str, model_path: str,
                       served_model_name: str, evalset: str, experiment: str, vllm_image: str,
                       runtime_version: str = "",
                       limit_per_category: str = "0", tags: dict[str, str] | None = None,
                       timeout_s: int | None = None, latency_requests: int = 0,
                       mlflow_tracking_uri: str = MLFLOW_URI_TEMPLATE) -> PodJob:
    """Serve ``model_path`` with vLLM on ``hw`` and run the eval job against it.

    ``vllm_image`` is the runtime the served version is pinned to (its deployment manifest's
    ``runtime_image``), never a platform default: the eval measures what will serve. The run is
    tagged with the runtime's image digest and version and the class's config hash, so any two
    eval runs say what differed. The pod's deadline is :func:`eval_pod_timeout_s` unless
    ``timeout_s`` is given."""
    args = ["--evalset", evalset, "--model", served_model_name, "--experiment", experiment,
            "--limit-per-category", limit_per_category, "--latency-requests", str(latency_requests),
            # A shared-CPU class is judged on the median of several rounds (its slo.latency_rounds).
            "--latency-rounds", str(hw.slo.latency_rounds),
            "--tag", f"hardware_class={hw.name}", "--tag", f"hardware_config_hash={hw.config_hash}",
            "--tag", f"runtime_image={vllm_image}", "--tag", f"runtime_image_digest={image_digest(vllm_image)}",
            "--tag", f"runtime_version={runtime_version or 'unknown'}"]
    for key, value in (tags or {}).items():
        args += ["--tag", f"{key}={value}"]
    return serving_pod_job(
        name=name, hw=hw, main=jobs_container(settings, "evaluate", args, mlflow_tracking_uri=mlflow_tracking_uri),
        model_path=model_path,
        served_model_name=served_model_name, vllm_image=vllm_image,
        timeout_s=timeout_s or eval_pod_timeout_s(hw),
    )
