"""
### Model refresh: receive -> stage -> qualify -> canary -> promote

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
5. **canary** (over an existing champion): stable (champion) and canary (candidate) vLLM
   servers behind a real proxy (nginx with weighted upstreams on the embedded default, the
   Gateway API HTTPRoute in a cluster), replayed traffic, steps of weight and observation
   window (default 5% -> 25% -> 50%). Each window compares canary with stable (error rate,
   TTFT p95, quality of sampled answers); at the failure limit the canary weight goes to 0 at
   once, the version is tagged `rejected` and the breach-to-rollback time is recorded. With
   `require_approval` the run waits, holding no worker slot, for an approval in the Airflow UI
   before the last step.
6. **promote**: `champion` -> candidate, `previous` -> old champion (a first model is promoted
   on its qualification: there is nothing to canary against), `deployments/<model>/current.json`
   rewritten with its history. `model_rollback` undoes it in one run.

Around it: `claim_model` holds the model's refresh lease (one run per model at a time; other
models' runs overlap) and the `release_model` teardown gives it back; `release_drop_claim`
gives the weight-drop watcher's claim back when the run fails at or before receive, so the
corrected drop, once republished, runs; an approval unanswered for `approval_timeout_min`
becomes `approval_timeout_outcome` (reject: rolled back, lease released); the `restore_routing`
teardown sends all traffic back to the champion after any canary, whatever its outcome (in a
cluster: the model's HTTPRoute to `<model>-stable`; on the embedded default the proxy lived
inside the canary pod and ended with it).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, PokeReturnValue, task

from llmops.canary import plan as canary_bounds
from llmops.config import dag_defaults, settings
from llmops.core.hardware import load_hardware_class
from llmops.evals.eval_job import eval_pod_timeout_s
from llmops.launch import mapped_pod_job_task, pod_job_task
from llmops.refresh import actions, plan, qualify
from llmops.refresh.approval import TimedApprovalOperator
from llmops.serving.assets import SERVING_CHANGED
from llmops.serving.vllm import pool_kwargs

SETTINGS = settings.load()
TARGET_CLASSES = SETTINGS.refresh_hardware_classes
EVALSET = "include/evalsets/synthetic_chat_v1.yaml"
APPROVAL_MAX_MIN = 7 * 24 * 60
log = logging.getLogger(__name__)

with DAG(
    dag_id="model_refresh",
    description="Receive, verify, stage, qualify and promote a new model checkpoint",
    schedule=None,
    start_date=dag_defaults.START_DATE,
    catchup=False,
    # Runs of different models overlap; runs of one model queue on its lease (claim_model).
    max_active_runs=8,
    tags=dag_defaults.tags("refresh"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
    params={
        "model": Param("tiny-chat", type="string", pattern="^[a-z0-9][a-z0-9-]{0,62}$", maxLength=63,
                       description="Registered model name in MLflow (and the drop's first path segment)"),
        "drop_uri": Param("s3://llmops-drops/tiny-chat/r1/", type="string", pattern="^s3://[^/]+/.+/$",
                          maxLength=dag_defaults.URI_MAX_LENGTH,
                          description="The weight drop: s3://<drops bucket>/<model>/<revision>/"),
        "hardware_classes": Param(list(TARGET_CLASSES), type="array",
                                  items={"type": "string", "enum": list(TARGET_CLASSES)},
                                  minItems=1, maxItems=len(TARGET_CLASSES), uniqueItems=True,
                                  description="Hardware classes to qualify on"),
        "max_drop": Param(0.02, type="number", minimum=0, maximum=1,
                          description="Largest allowed per-category drop against the champion (absolute)"),
        "canary_steps": Param([5, 25, 50], type="array", items={"type": "integer", "minimum": 1, "maximum": 100},
                              minItems=1, maxItems=canary_bounds.CANARY_MAX_STEPS,
                              description="Canary traffic weights (%), strictly increasing"),
        "canary_window_s": Param(SETTINGS.canary_window_s, type="integer", minimum=5,
                                 maximum=canary_bounds.CANARY_MAX_WINDOW_S,
                                 description="Observation window of each canary step (seconds)"),
        "canary_failure_limit": Param(2, type="integer", minimum=1, maximum=canary_bounds.CANARY_MAX_FAILURE_LIMIT,
                                      description="Failed analyses before the canary is rolled back"),
        "require_approval": Param(False, type="boolean",
                                  description="Wait for an approval in the Airflow UI before the last canary step"),
        "approval_timeout_min": Param(24 * 60, type="integer", minimum=1, maximum=APPROVAL_MAX_MIN,
                                      description="How long an approval waits (minutes); the run holds the "
                                                  "model's lease meanwhile"),
        "approval_timeout_outcome": Param("reject", type="string", enum=["reject", "approve"],
                                          description="What an unanswered approval becomes: reject (roll the "
                                                      "canary back, release the lease) or approve"),
        "canary_vllm_args": Param([], type="array", items={"type": "string", "maxLength": dag_defaults.ARG_MAX_LENGTH},
                                  maxItems=dag_defaults.ARGS_MAX_ITEMS,
                                  description="Extra vLLM flags for the canary server only (test a config change)"),
    },
) as dag:
    # One refresh at a time per model (max_active_runs counts per DAG): a lease taken with an S3
    # conditional write; a run that finds it held waits without holding a worker slot.
    @task.sensor(task_id="claim_model", mode="reschedule", poke_interval=30, timeout=24 * 3600)
    def claim_model(params: dict | None = None, run_id: str | None = None) -> PokeReturnValue:
        """Hold the model's refresh lease, or wait while another live run (a refresh, or a
        runtime_requalify moving the champion's pin) holds it."""
        held, why = actions.claim_model(params["model"], run_id)
        log.info(why)
        return PokeReturnValue(is_done=held, xcom_value=why)

    @task(task_id="release_model")
    def release_model(params: dict | None = None, run_id: str | None = None) -> bool:
        """Give the model's lease back, whatever the run's outcome (a teardown)."""
        return actions.release_model(params["model"], run_id)

    claim = claim_model()
    # Object-storage outages are the likeliest failure of these two (a minute-long S3 outage took
    # receive's third try, measured in tests/faults); their retries are safe (a verdict is never
    # retried, stage is idempotent), so they get two more than the default: 30 s .. 8 min apart.
    receive = pod_job_task(plan.receive_job(SETTINGS), task_id="receive", retries=4)
    stage = pod_job_task(plan.stage_job(SETTINGS), task_id="stage", retries=4)
    claim >> receive >> stage

    # A drop that never got past receive (quarantined, or the lease wait timed out) must not stay
    # claimed: its claim is released so that the corrected drop, once republished, runs.
    @task(task_id="release_drop_claim", trigger_rule="one_failed")
    def release_drop_claim(params: dict | None = None, run_id: str | None = None) -> bool:
        """Give the weight-drop watcher's claim back when the run failed at or before receive."""
        return actions.release_drop_claim(params["drop_uri"], run_id,
                                          reason="the refresh run failed at or before receive (see its receive task)")

    # (receive's own state covers the lease wait: upstream_failed when claim_model timed out.)
    receive >> release_drop_claim()

    qualify_outputs = []
    for hw_name in TARGET_CLASSES:

        @task(task_id=f"plan_qualify_{hw_name}")
        def plan_qualify(stage_result: dict, hw_name: str = hw_name, params: dict | None = None) -> list[dict]:
            """The pod jobs that qualify the candidate (and the champion) on this class."""
            return plan.plan_qualification(SETTINGS, hw_name, selected=params["hardware_classes"],
                                           model=params["model"], stage_result=stage_result,
                                           evalset_config=EVALSET)

        hw_class = load_hardware_class(hw_name, SETTINGS.hardware_configs_dir)
        qualify_task = mapped_pod_job_task(task_id=f"qualify_{hw_name}", pod_jobs=plan_qualify(stage.output),
                                           max_pod_timeout_s=eval_pod_timeout_s(hw_class), **pool_kwargs(hw_class))
        qualify_outputs.append(qualify_task.output)

    @task(task_id="gate", trigger_rule="none_failed", multiple_outputs=True)
    def gate(stage_result: dict, *qualify_results: list, params: dict | None = None, run_id: str | None = None) -> dict:
        """The qualify gate over every class's eval results (fails the run with the reasons)."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowFailException

        results = [r for per_class in qualify_results for r in (per_class or [])]
        try:
            return qualify.judge_qualification(
                SETTINGS, model=params["model"], candidate_version=str(stage_result["model_version"]),
                evalset_config=EVALSET, results=results, max_drop=params["max_drop"],
                tracking_uri=BaseHook.get_connection("llmops_mlflow").host, airflow_run_id=run_id)
        except qualify.GateFailed as exc:
            raise AirflowFailException(str(exc)) from exc  # a verdict, not a transient error: no retry

    verdict = gate(stage.output, *qualify_outputs)
    serving_hw = load_hardware_class(SETTINGS.default_hardware_class, SETTINGS.hardware_configs_dir)
    # The canary pod's pool slots are the GPUs it requests (two servers in the embedded canary pod).
    canary_pool = canary_bounds.canary_pool_kwargs(serving_hw, SETTINGS.canary_router)

    @task(task_id="plan_canary")
    def plan_canary(stage_result: dict, verdict: dict, params: dict | None = None) -> list[dict]:
        """The canary pod (stable = champion, canary = candidate); none for a first model."""
        from airflow.sdk.exceptions import AirflowFailException

        from llmops.serving.vllm_args import VllmArgsError

        spec = plan.canary_spec(SETTINGS, weights=params["canary_steps"], window_s=params["canary_window_s"],
                                failure_limit=params["canary_failure_limit"])
        try:
            return plan.plan_canary(SETTINGS, model=params["model"], stage_result=stage_result, verdict=verdict,
                                    spec=spec, stop_before_last_step=params["require_approval"],
                                    canary_extra_args=params["canary_vllm_args"])
        except (VllmArgsError, plan.PinMismatch) as exc:  # a refused flag or pin: a retry would refuse it again
            raise AirflowFailException(str(exc)) from exc

    planned_canary = plan_canary(stage.output, verdict)
    canary = mapped_pod_job_task(task_id="canary", pod_jobs=planned_canary,
                                 max_pod_timeout_s=canary_bounds.max_timeout_s(serving_hw), **canary_pool)

    @task(task_id="check_canary")
    def check_canary(stage_result: dict, results: list, params: dict | None = None) -> dict | None:
        """A rolled-back canary fails the run here (a verdict: no retry) and tags the version rejected."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return qualify.check_canary(params["model"], str(stage_result["model_version"]),
                                        next(iter(results or []), None),
                                        BaseHook.get_connection("llmops_mlflow").host)
        except qualify.GateFailed as exc:
            raise AirflowFailException(str(exc)) from exc

    canary_result = check_canary(stage.output, canary.output)

    @task.short_circuit(task_id="needs_approval", ignore_downstream_trigger_rules=False)
    def needs_approval(result: dict | None) -> bool:
        """Only a canary that stopped before its last step waits for a person."""
        return bool(result) and result.get("outcome") == "awaiting_approval"

    approve_last_step = TimedApprovalOperator(
        task_id="approve_last_step",
        subject="Promote the canary to its last step and then to champion?",
        body="The canary passed every step but the last. Its per-step analysis is in MLflow "
             "(experiment llmops-refresh, run tagged llmops.stage=canary). Unanswered after "
             "{{ params.approval_timeout_min }} min, the answer is {{ params.approval_timeout_outcome }}.",
        timeout_param="approval_timeout_min",
        outcome_param="approval_timeout_outcome",
        fail_on_reject=True,
        # The wait is bounded by response_timeout (the Param, at most a week), not by an execution
        # timeout racing the hand-over to the awaiting_input state.
        response_timeout=timedelta(minutes=APPROVAL_MAX_MIN),
        execution_timeout=None,
    )

    @task(task_id="reject_unapproved", trigger_rule="all_failed")
    def reject_unapproved(stage_result: dict, params: dict | None = None, run_id: str | None = None) -> None:
        """A rejected (or timed-out into reject) approval: the version is tagged rejected; the
        teardowns then route everything to the champion and release the model's lease."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowSkipException
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        from llmops.io.registry import ModelRegistry

        states = RuntimeTaskInstance.get_task_states(dag_id="model_refresh", task_ids=["approve_last_step"],
                                                     run_ids=[run_id])
        if states.get(run_id, {}).get("approve_last_step") != "failed":
            raise AirflowSkipException("no approval was refused: an earlier failure already decided the run")

        ModelRegistry(BaseHook.get_connection("llmops_mlflow").host).reject(
            params["model"], str(stage_result["model_version"]),
            {"llmops.canary_reasons": "the last canary step was not approved (rejected, or no answer within "
                                      f"{params['approval_timeout_min']} min)"})

    approve_last_step >> reject_unapproved(stage.output)

    @task(task_id="plan_canary_last_step")
    def plan_canary_last_step(stage_result: dict, verdict: dict, result: dict,
                              params: dict | None = None) -> list[dict]:
        """The same canary, resumed at its last step after the approval."""
        spec = plan.canary_spec(SETTINGS, weights=params["canary_steps"], window_s=params["canary_window_s"],
                                failure_limit=params["canary_failure_limit"])
        return plan.plan_canary(SETTINGS, model=params["model"], stage_result=stage_result, verdict=verdict,
                                spec=spec, from_step=result["next_step"], failures_so_far=result["failures"],
                                   canary_extra_args=params["canary_vllm_args"], name="canary-last-step")

    planned_last = plan_canary_last_step(stage.output, verdict, canary_result)
    canary_last = mapped_pod_job_task(task_id="canary_last_step", pod_jobs=planned_last,
                                      max_pod_timeout_s=canary_bounds.max_timeout_s(serving_hw),
                                      **canary_pool)
    last_result = check_canary.override(task_id="check_canary_last_step")(stage.output, canary_last.output)
    needs_approval(canary_result) >> approve_last_step >> planned_last

    @task(task_id="promote", trigger_rule="none_failed_min_one_success", multiple_outputs=True,
          outlets=[SERVING_CHANGED])
    def promote(verdict: dict, canary: dict | None, canary_last: dict | None, run_id: str | None = None) -> dict:
        """champion -> candidate, previous -> old champion, current.json with history.

        A first model is promoted on its qualification; over a champion only a canary that
        completed (weight 100) promotes.
        """
        from airflow.sdk import BaseHook, Variable
        from airflow.sdk.exceptions import AirflowFailException

        final = canary_last or canary
        if verdict["champion_version"] is not None and (final or {}).get("outcome") != "promoted":
            raise AirflowFailException(f"no completed canary for version {verdict['candidate_version']} "
                                       f"(outcome: {(final or {}).get('outcome')}): not promoting")
        return actions.promote(SETTINGS, model=verdict["model"], version=verdict["candidate_version"], run_id=run_id,
                               tracking_uri=BaseHook.get_connection("llmops_mlflow").host,
                               models_bucket=Variable.get("llmops_bucket_models"))

    promoted = promote(verdict, canary_result, last_result)

    @task(task_id="restore_routing", multiple_outputs=True)
    def restore_routing(params: dict | None = None) -> dict:
        """All traffic back to the champion once the canary is over, whatever happened to it
        (failed, rejected, killed or promoted)."""
        from llmops.serving.deployments import restore_champion_routing

        return restore_champion_routing(SETTINGS, params["model"])

    restored = restore_routing().as_teardown(setups=planned_canary)
    promoted >> restored
    promoted >> release_model().as_teardown(setups=claim)
    # Teardowns do not decide the run's state (promote does: a failed canary fails the run). A
    # failed restore must still fail it, so a plain leaf follows it; `on_failure_fail_dagrun`
    # would instead make the teardown the run's only leaf and hide the canary's failure.
    restored >> EmptyOperator(task_id="routing_restored")
