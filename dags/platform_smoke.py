"""
### Platform smoke test

Runs **one pod job** end to end on whatever launcher is configured: a vLLM server
(sidecar, hardware class `LLMOPS_DEFAULT_HARDWARE_CLASS`, `cpu` on the embedded
default) serves one of the project's own tiny checkpoints, and the eval job asks it
the eval set's questions, scores the answers per category with bootstrap intervals
and records an MLflow run (experiment `llmops-smoke`). A second task reads the run
back from MLflow, so a green run proves Airflow, the launcher, vLLM, the eval job,
MLflow and its S3 artifact store work together.

Trigger it from the UI: pick the checkpoint (`good`, `better`, `degraded`) and how
many items per category to ask.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from llmops.config import dag_defaults, settings
from llmops.core.hardware import load_hardware_class
from llmops.evals.eval_job import evaluation_pod_job
from llmops.launch import pod_job_task
from llmops.serving.vllm import pool_kwargs

SETTINGS = settings.load()
HARDWARE = load_hardware_class(SETTINGS.default_hardware_class, SETTINGS.hardware_configs_dir)

with DAG(
    dag_id="platform_smoke",
    description="One pod job (vLLM sidecar + eval job) through the configured launcher, recorded in MLflow",
    schedule=None,
    start_date=dag_defaults.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dag_defaults.tags("smoke"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
    params={
        "model_variant": Param("good", type="string", enum=["good", "better", "degraded"],
                               description="Which of the model maker's checkpoints to serve"),
        "limit_per_category": Param(10, type="integer", minimum=1, maximum=500,
                                    description="Eval items per category (the set has 100 each)"),
    },
) as dag:
    serve_and_evaluate = pod_job_task(
        evaluation_pod_job(
            SETTINGS,
            HARDWARE,
            name="smoke-evaluate",
            model_path="/models/tiny-chat/{{ params.model_variant }}",
            served_model_name="tiny-chat-{{ params.model_variant }}",
            evalset="include/evalsets/synthetic_chat_v1.yaml",
            experiment="llmops-smoke",
            # A model-cache checkpoint, not a registered version: the platform's runtime serves it.
            vllm_image=SETTINGS.vllm_image,
            limit_per_category="{{ params.limit_per_category }}",
            tags={"model_variant": "{{ params.model_variant }}", "airflow_run_id": "{{ run_id }}"},
        ),
        task_id="serve_and_evaluate",
        **pool_kwargs(HARDWARE),
    )

    @task(task_id="verify_mlflow_run", multiple_outputs=True)
    def verify_mlflow_run(result: dict) -> dict:
        """Read the eval run back from MLflow: it must exist and hold the per-category metrics."""
        from llmops.evals.smoke_check import verify_eval_run

        return verify_eval_run(result)

    verify_mlflow_run(serve_and_evaluate.output)
