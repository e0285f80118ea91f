"""Pod jobs of the product's pipelines, built from settings and a hardware class.

Values only known at run time (params, upstream XComs, connections) are Jinja
templates inside the pod job, rendered by Airflow before either launcher reads it.
"""

from __future__ import annotations

from llmops.hardware import HardwareClass
from llmops.pods import Container, PodJob, Resources
from llmops.serving import serving_pod_job
from llmops.settings import Settings

# Rendered at run time from the Airflow connection, never read at parse time.
MLFLOW_URI_TEMPLATE = "{{ conn.llmops_mlflow.host }}"


def jobs_container(settings: Settings, module: str, args: list[str], *, env: dict[str, str] | None = None,
                   resources: Resources | None = None, mlflow_tracking_uri: str = MLFLOW_URI_TEMPLATE) -> Container:
    """The main container of a pod job: ``python -m llmops.jobs.<module> <args>`` in the jobs image."""
    return Container(
        name="job",
        image=settings.jobs_image,
        command=("python", "-m", f"llmops.jobs.{module}"),
        args=tuple(args),
        env={"MLFLOW_TRACKING_URI": mlflow_tracking_uri, **(env or {})},
        resources=resources or Resources(cpu="1", memory="2Gi"),
    )


def evaluation_pod_job(settings: Settings, hw: HardwareClass, *, name: str, model_path: str,
                       served_model_name: str, evalset: str, experiment: str,
                       limit_per_category: str = "0", tags: dict[str, str] | None = None,
                       timeout_s: int = 1800, latency_requests: int = 0,
                       mlflow_tracking_uri: str = MLFLOW_URI_TEMPLATE) -> PodJob:
    """Serve ``model_path`` with vLLM on ``hw`` and run the eval job against it."""
    args = ["--evalset", evalset, "--model", served_model_name, "--experiment", experiment,
            "--limit-per-category", limit_per_category, "--latency-requests", str(latency_requests),
            "--tag", f"hardware_class={hw.name}", "--tag", f"hardware_config_hash={hw.config_hash}"]
    for key, value in (tags or {}).items():
        args += ["--tag", f"{key}={value}"]
    return serving_pod_job(
        name=name, hw=hw, main=jobs_container(settings, "evaluate", args, mlflow_tracking_uri=mlflow_tracking_uri),
        model_path=model_path,
        served_model_name=served_model_name, vllm_image=settings.vllm_image, timeout_s=timeout_s,
    )
