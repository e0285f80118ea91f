"""
### Runtime re-qualification: a new serving runtime is a qualified change of its own

A serving runtime is an entry of `include/runtimes.yaml` (vLLM image by digest, vLLM version,
accelerator, CUDA and driver); a new image digest, or a CUDA/driver bump of a listed one, is a
new runtime identity. Before a champion serves on it, the same weights must give the same
answers there: this catches a silent kernel miscompile after an upgrade.

1. **detect** (every 15 minutes, cheap): compares the allowlist's identities with
   `runtimes/seen.json` in the models bucket (the first run only records the baseline).
   Triggered from the UI with `runtime_image`, it re-qualifies on that listed runtime
   (and `model`: one model, empty = every model with a champion).
2. **plan**: for each new runtime and each model whose champion is not pinned to its image,
   two eval pod jobs on the default hardware class, same eval set and `limit_per_category`:
   the champion's weights (fetched, digest verified) on its **pinned** runtime and on the
   **new** one. Each eval run is tagged with its runtime's identity (image, digest, vLLM,
   CUDA, driver), so two runs say what differed.
3. **judge**: per category, the share of answers that changed and the score delta, paired by
   item (`max_answer_change`, `max_score_delta`; strict by default: greedy decoding of the same
   weights gives the same strings). The comparison is logged to MLflow (experiment
   `llmops-runtime-requalify`) and the runtime's verdict written to
   `runtimes/<digest>/<identity>/verdict.json` (`qualified` or `rejected`).
4. **move_pins** (qualified): the champion's `deployment.json` is re-pinned to the new runtime
   and the default class (the old one kept as `deployment.<n>.json`), its registry pins
   updated, its serving objects re-applied (asset `serving_changed`); **rebaseline** then emits
   `benchmark_targets_changed` naming the runtime change.
5. **check_verdicts** (rejected): fails the run naming the categories that changed; receive
   refuses drops pinned to the runtime from then on.
6. **record_seen**: a runtime with a verdict, or nothing to re-qualify, is no longer new.
"""

from __future__ import annotations

from airflow.sdk import DAG, CronTriggerTimetable, Param, task

from llmops.benchmarks.assets import TARGETS_CHANGED
from llmops.config import dag_defaults, settings
from llmops.core.hardware import load_hardware_class
from llmops.evals.eval_job import eval_pod_timeout_s
from llmops.launch import mapped_pod_job_task
from llmops.serving.assets import SERVING_CHANGED
from llmops.serving.vllm import pool_kwargs

SETTINGS = settings.load()
HARDWARE = load_hardware_class(SETTINGS.default_hardware_class, SETTINGS.hardware_configs_dir)
EVALSET = "include/evalsets/synthetic_chat_v1.yaml"

with DAG(
    dag_id="runtime_requalify",
    description="Re-qualify each champion on a new serving runtime, paired against its pinned runtime",
    schedule=CronTriggerTimetable("*/15 * * * *", timezone="UTC"),
    start_date=dag_defaults.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dag_defaults.tags("refresh", "runtimes"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
    params={
        "runtime_image": Param("", type="string", maxLength=dag_defaults.URI_MAX_LENGTH,
                               pattern="^$|^[^@\\s]+@sha256:[0-9a-f]{64}$",
                               description="Re-qualify on this runtime of include/runtimes.yaml (repo@sha256:...); "
                                           "empty: the runtimes new since the last detection"),
        "model": Param("", type="string", pattern="^$|^[a-z0-9][a-z0-9-]{0,62}$", maxLength=63,
                       description="Registered model whose champion is re-qualified (empty: every model with one)"),
        "limit_per_category": Param(0, type="integer", minimum=0, maximum=1000,
                                    description="Eval items per category on each runtime (0: every item)"),
        "max_answer_change": Param(0.0, type="number", minimum=0, maximum=1,
                                   description="Share of a category's answers that may change (0: none)"),
        "max_score_delta": Param(0.0, type="number", minimum=0, maximum=1,
                                 description="Largest change of a category's mean score (absolute)"),
    },
) as dag:

    @task(task_id="detect", multiple_outputs=True, execution_timeout=dag_defaults.LIGHT_TASK_TIMEOUT)
    def detect(params: dict | None = None) -> dict:
        """The runtimes to re-qualify: the one named, or those new since the last detection."""
        from airflow.sdk import Variable
        from airflow.sdk.exceptions import AirflowFailException

        from llmops.core.fields import DocumentError
        from llmops.core.runtimes import RuntimeNotAllowed
        from llmops.io import s3 as s3io
        from llmops.refresh import runtime_requalify

        try:
            return runtime_requalify.detect(SETTINGS, s3io.client_from_connection(),
                                            Variable.get("llmops_bucket_models"), runtime_image=params["runtime_image"])
        except (RuntimeNotAllowed, DocumentError) as exc:  # the allowlist decides; a retry would decide the same
            raise AirflowFailException(str(exc)) from exc

    @task(task_id="plan", multiple_outputs=True, execution_timeout=dag_defaults.LIGHT_TASK_TIMEOUT)
    def plan(detected: dict, params: dict | None = None) -> dict:
        """Each (new runtime, model whose champion is not pinned to it) to re-qualify, and what is skipped."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowFailException

        from llmops.io import registry
        from llmops.refresh import runtime_requalify

        tracking_uri = BaseHook.get_connection("llmops_mlflow").host
        try:
            return runtime_requalify.pairs_to_run(SETTINGS, registry.ModelRegistry(tracking_uri),
                                                  detected["runtimes"], model=params["model"])
        except runtime_requalify.NothingToQualify as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(task_id="plan_evaluations", execution_timeout=dag_defaults.LIGHT_TASK_TIMEOUT)
    def plan_evaluations(pairs: list, params: dict | None = None) -> list:
        """The eval pod jobs: each champion once on its pinned runtime, once on each new runtime."""
        from airflow.sdk import BaseHook

        from llmops.refresh import runtime_requalify

        return runtime_requalify.requalification_jobs(
            SETTINGS, list(pairs), evalset_config=EVALSET, limit_per_category=params["limit_per_category"],
            s3_endpoint=BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url"),
            tracking_uri=BaseHook.get_connection("llmops_mlflow").host)

    detected = detect()
    planned = plan(detected)
    evaluate = mapped_pod_job_task(task_id="evaluate", pod_jobs=plan_evaluations(planned["pairs"]),
                                   max_pod_timeout_s=eval_pod_timeout_s(HARDWARE), **pool_kwargs(HARDWARE))

    @task(task_id="judge", multiple_outputs=True, execution_timeout=dag_defaults.LIGHT_TASK_TIMEOUT)
    def judge(pairs: list, results: list, params: dict | None = None, run_id: str | None = None) -> dict:
        """Pair each champion's two eval runs, log the comparison, write each runtime's verdict."""
        from airflow.sdk import BaseHook, Variable

        from llmops.io import s3 as s3io
        from llmops.refresh import runtime_requalify

        return runtime_requalify.judge(
            SETTINGS, pairs=list(pairs), results=list(results or []),
            tracking_uri=BaseHook.get_connection("llmops_mlflow").host,
            models_bucket=Variable.get("llmops_bucket_models"), s3=s3io.client_from_connection(),
            max_answer_change=params["max_answer_change"], max_score_delta=params["max_score_delta"],
            airflow_run_id=run_id)

    verdicts = judge(planned["pairs"], evaluate.output)

    # What serves changed: serving_reconcile checks the live objects against the new render.
    @task(task_id="move_pins", outlets=[SERVING_CHANGED], execution_timeout=dag_defaults.LIGHT_TASK_TIMEOUT)
    def move_pins(qualified: list, run_id: str | None = None) -> list:
        """Each qualified champion re-pinned to the new runtime and served on it (skipped when none qualified)."""
        from airflow.sdk import BaseHook, Variable
        from airflow.sdk.exceptions import AirflowSkipException

        from llmops.refresh import runtime_requalify

        if not qualified:
            raise AirflowSkipException("no runtime qualified: no pin moves")

        tracking_uri = BaseHook.get_connection("llmops_mlflow").host
        bucket = Variable.get("llmops_bucket_models")
        return [runtime_requalify.move_pin_under_lease(SETTINGS, qualified=one, tracking_uri=tracking_uri,
                                                       models_bucket=bucket, run_id=run_id) for one in qualified]

    moved = move_pins(verdicts["qualified"])

    @task(task_id="rebaseline", multiple_outputs=True, outlets=[TARGETS_CHANGED],
          execution_timeout=dag_defaults.LIGHT_TASK_TIMEOUT)
    def rebaseline(moved: list, outlet_events=None) -> dict:
        """Announce the runtime change to the nightly benchmarks (skipped, no event, when no pin moved)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from llmops.refresh import runtime_requalify

        extra = runtime_requalify.benchmark_trigger(list(moved))
        if extra is None:
            raise AirflowSkipException("no champion's pin moved: nothing to re-benchmark")
        outlet_events[TARGETS_CHANGED].extra = extra
        return extra

    # Runs when no pin moved too (rebaseline skipped): a rejected runtime must fail the run.
    @task(task_id="check_verdicts", multiple_outputs=True, trigger_rule="none_failed",
          execution_timeout=dag_defaults.LIGHT_TASK_TIMEOUT)
    def check_verdicts(rejected: list, qualified: list) -> dict:
        """Fails the run (a verdict: no retry) naming each rejected runtime's changed categories."""
        from airflow.sdk.exceptions import AirflowFailException

        from llmops.refresh import runtime_requalify

        summary = {"rejected": list(rejected or []), "qualified": list(qualified or [])}
        try:
            runtime_requalify.raise_if_rejected(summary)
        except runtime_requalify.RuntimeRejected as exc:
            raise AirflowFailException(str(exc)) from exc
        return {"qualified": len(summary["qualified"]), "rejected": 0}

    checked = check_verdicts(verdicts["rejected"], verdicts["qualified"])
    rebaselined = rebaseline(moved)
    rebaselined >> checked

    @task(task_id="record_seen", multiple_outputs=False, trigger_rule="all_done",
          execution_timeout=dag_defaults.LIGHT_TASK_TIMEOUT)
    def record_seen(detected: dict, planned: dict) -> dict:
        """Runtimes with a verdict, or nothing to re-qualify, are no longer new (a failed run's stay new)."""
        from airflow.sdk import Variable

        from llmops.io import s3 as s3io
        from llmops.refresh import runtime_requalify

        if not detected:
            return {}
        runtimes = [*detected["runtimes"], *detected.get("judged", [])]
        if planned is None:  # plan failed: only a runtime with a verdict is done
            planned = {"skipped": [], "pairs": [{"runtime": r} for r in runtimes]}
        return runtime_requalify.record_seen(
            s3io.client_from_connection(), Variable.get("llmops_bucket_models"), runtimes=runtimes,
            skipped=planned["skipped"], pairs=planned["pairs"])

    # A teardown: it runs whatever happened, and does not decide the run's state (a failed detect
    # or a rejected runtime still fails the run).
    checked >> record_seen(detected, planned).as_teardown()
