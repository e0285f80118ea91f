"""
### Model refresh: receive -> stage -> qualify -> (canary) -> promote

A new checkpoint dropped in object storage (`s3://<drops>/<model>/<revision>/` with its
`manifest.json` written last) becomes a qualified model version, or is stopped with the
reason named:

1. **receive** (pod job): validates the manifest and streams every file once to verify its
   size and SHA-256. A missing, extra, truncated or corrupted file moves the drop to
   `quarantine/` with a `reason.json` (nothing is deleted) and fails the run naming each file.
2. **stage** (pod job): server-side copy to a content-addressed path in the models bucket
   (resumable, idempotent), tokenizer and chat-template hashes, the deployment manifest
   pinning weights, runtime image, hardware configs and tokenizer; an MLflow model version
   tagged with every pin, alias `challenger`. The same weights never make a second version.
3. **qualify** (pod jobs, per target hardware class): an init container fetches the staged
   weights and verifies their digest, vLLM serves them, the eval job scores every eval item and
   measures TTFT/TPOT; the champion is evaluated the same way for a paired comparison.
4. **gate**: per category, fails when the drop against the champion exceeds its threshold and
   the paired-bootstrap 95% interval excludes zero; latency fails on the class SLO or a >10%
   regression. The verdict is logged to MLflow as JSON and a Markdown table.
5. **promote**: a first model (no champion: nothing to canary against) becomes `champion`
   at once; `deployments/<model>/current.json` records it with its history.

The canary stage (weighted traffic through a real proxy, automatic rollback) and the
promotion of a challenger over an existing champion are being built (issue 3): until then a
qualified challenger keeps the `challenger` alias and the run says so.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from llmops import dagkit, refresh, settings
from llmops.hardware import load_hardware_class
from llmops.launch import mapped_pod_job_task, pod_job_task
from llmops.serving import pool_kwargs

SETTINGS = settings.load()
TARGET_CLASSES = SETTINGS.refresh_hardware_classes
EVALSET = "include/evalsets/synthetic_chat_v1.yaml"

with DAG(
    dag_id="model_refresh",
    description="Receive, verify, stage, qualify and promote a new model checkpoint",
    schedule=None,
    start_date=dagkit.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dagkit.tags("refresh"),
    default_args=dagkit.default_args(),
    doc_md=__doc__,
    params={
        "model": Param("tiny-chat", type="string", pattern="^[a-z0-9][a-z0-9-]{0,62}$",
                       description="Registered model name in MLflow (and the drop's first path segment)"),
        "drop_uri": Param("s3://llmops-drops/tiny-chat/r1/", type="string", pattern="^s3://[^/]+/.+/$",
                          description="The weight drop: s3://<drops bucket>/<model>/<revision>/"),
        "hardware_classes": Param(list(TARGET_CLASSES), type="array",
                                  items={"type": "string", "enum": list(TARGET_CLASSES)},
                                  minItems=1, description="Hardware classes to qualify on"),
        "max_drop": Param(0.02, type="number", minimum=0, maximum=1,
                          description="Largest allowed per-category drop against the champion (absolute)"),
    },
) as dag:
    receive = pod_job_task(refresh.receive_job(SETTINGS), task_id="receive")
    stage = pod_job_task(refresh.stage_job(SETTINGS), task_id="stage")
    receive >> stage

    qualify_outputs = []
    for hw_name in TARGET_CLASSES:

        @task(task_id=f"plan_qualify_{hw_name}")
        def plan_qualify(stage_result: dict, hw_name: str = hw_name, params: dict | None = None) -> list[dict]:
            """The pod jobs that qualify the candidate (and the champion) on this class."""
            return refresh.plan_qualification(SETTINGS, hw_name, selected=params["hardware_classes"],
                                              model=params["model"], stage_result=stage_result,
                                              evalset_config=EVALSET)

        qualify = mapped_pod_job_task(task_id=f"qualify_{hw_name}", pod_jobs=plan_qualify(stage.output),
                                      **pool_kwargs(load_hardware_class(hw_name, SETTINGS.hardware_configs_dir)))
        qualify_outputs.append(qualify.output)

    @task(task_id="gate", trigger_rule="none_failed")
    def gate(stage_result: dict, *qualify_results: list, params: dict | None = None) -> dict:
        """The qualify gate over every class's eval results (fails the run with the reasons)."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowFailException

        results = [r for per_class in qualify_results for r in (per_class or [])]
        try:
            return refresh.decide(SETTINGS, model=params["model"], candidate_version=str(stage_result["model_version"]),
                                  evalset_config=EVALSET, results=results, max_drop=params["max_drop"],
                                  tracking_uri=BaseHook.get_connection("llmops_mlflow").host)
        except refresh.GateFailed as exc:
            raise AirflowFailException(str(exc)) from exc  # a verdict, not a transient error: no retry

    @task(task_id="promote")
    def promote(verdict: dict, run_id: str | None = None, var: dict | None = None) -> dict:
        """First model: champion at once. Over a champion: waits for the canary stage."""
        from airflow.sdk import BaseHook, Variable

        if verdict["champion_version"] is not None:
            return {"promoted": False, "challenger": verdict["candidate_version"],
                    "reason": "a champion exists: promotion goes through the canary stage (issue 3, in progress)"}
        s3 = BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url")
        return refresh.promote(SETTINGS, model=verdict["model"], version=verdict["candidate_version"], run_id=run_id,
                               tracking_uri=BaseHook.get_connection("llmops_mlflow").host, s3_endpoint=s3,
                               models_bucket=Variable.get("llmops_bucket_models"))

    promote(gate(stage.output, *qualify_outputs))
