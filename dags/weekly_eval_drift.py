"""
### Weekly eval drift: the production model re-evaluated every week

Every Monday 06:00 UTC, after every change of the live retrieval corpus (asset
`llmops-corpus-main`, emitted by `corpus_reingest`; a rerun in the same week replaces that
week's point), or from the UI with the Params form, the registered model's
**champion**, and its **previous** version when there is one, are evaluated on every eval
set in `include/evalsets/` (or the ones selected), and a report says what drifted:

1. **check_evalsets** (pod job): Great Expectations checks of each eval set's schema (id,
   category, prompt or messages, reference, scorer), duplicate ids and prompts, empty
   references; sizes reported (50-500 items recommended). A failing set stops the run
   naming the file, the check and the lines.
2. **plan_evaluations** -> **evaluate** (mapped pod jobs, one per model alias and eval set):
   the refresh pipeline's eval job beside vLLM serving the alias's pinned weights (fetched
   and digest-verified by an init container); per-category scores with bootstrap intervals
   and per-item results go to MLflow (experiment `llmops-eval-drift`, tagged with the week).
3. **report** (pod job): per category, the delta against last week and against the
   champion's qualification baseline (paired bootstrap over item ids), the trend over the
   last `weeks`; drift only when the change exceeds `threshold` **and** the interval excludes
   0; an eval set whose content hash changed starts a new series (reported as changed, never
   drift). HTML page with charts and a Markdown summary (worst failing and newly failing
   examples per category) logged to MLflow, metrics `drift/<evalset>/<category>/...`.
4. **check_drift**: fails the run, after the report is written, when drift was flagged.

No champion yet? The run fails at `plan_evaluations` saying how to get one (run
`model_refresh`, or `make run` on the embedded platform). See `docs/eval-drift.md`.
"""

from __future__ import annotations

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, task

from llmops.config import dag_defaults, settings
from llmops.core.hardware import load_hardware_class
from llmops.corpus.assets import CORPUS_ASSET
from llmops.drift import plan as drift_plan
from llmops.evals.eval_job import eval_pod_timeout_s
from llmops.launch import mapped_pod_job_task, pod_job_task
from llmops.serving.vllm import pool_kwargs

SETTINGS = settings.load()
HARDWARE = load_hardware_class(SETTINGS.default_hardware_class, SETTINGS.hardware_configs_dir)

with DAG(
    dag_id="weekly_eval_drift",
    description="Re-evaluate the production model weekly and report per-category drift",
    # Weekly, and after every corpus change: the served model's answers may depend on it.
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 6 * * 1", timezone="UTC"), assets=CORPUS_ASSET),
    start_date=dag_defaults.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dag_defaults.tags("drift", "evals"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
    params={
        "model": Param("tiny-chat", type="string", pattern="^[a-z0-9][a-z0-9-]{0,62}$", maxLength=63,
                       description="Registered model whose champion (and previous) is evaluated"),
        "weeks": Param(8, type="integer", minimum=2, maximum=52,
                       description="Weeks of history in the trend and the charts"),
        "categories": Param([], type="array", maxItems=dag_defaults.NAMES_MAX_ITEMS,
                            items={"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
                                   "maxLength": dag_defaults.NAME_MAX_LENGTH},
                            description="Categories to report (empty: every category)"),
        "evalsets": Param([], type="array", maxItems=dag_defaults.NAMES_MAX_ITEMS,
                            items={"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
                                   "maxLength": dag_defaults.NAME_MAX_LENGTH},
                          description="Eval sets by name (empty: every set in include/evalsets)"),
        "threshold": Param(0.05, type="number", minimum=0, maximum=0.5,
                           description="Smallest absolute score change that counts as drift"),
        "limit_per_category": Param(0, type="integer", minimum=0, maximum=1000,
                                    description="Items per category (0: every item)"),
        "fail_on": Param("regression", type="string", enum=["regression", "any"],
                         description="Which drifts fail the run: score drops only, or any direction"),
    },
) as dag:
    check_evalsets = pod_job_task(drift_plan.hygiene_job(SETTINGS), task_id="check_evalsets")

    @task(task_id="plan_evaluations")
    def plan_evaluations(hygiene: dict, params: dict | None = None, dag_run=None, run_id: str | None = None) -> list:
        """One eval pod job per (model alias, eval set); fails clearly when there is no champion."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowFailException

        from llmops.io import registry

        tracking_uri = BaseHook.get_connection("llmops_mlflow").host
        s3_endpoint = BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url")
        try:
            targets = drift_plan.targets(registry.ModelRegistry(tracking_uri), params["model"], tracking_uri)
        except drift_plan.NoChampion as exc:
            raise AirflowFailException(str(exc)) from exc  # retrying cannot make a champion appear
        return drift_plan.evaluation_jobs(
            SETTINGS, HARDWARE, model=params["model"], targets=targets, evalsets=hygiene["evalsets"],
            week=drift_plan.week_of(dag_run.logical_date, dag_run.run_after),
            limit_per_category=params["limit_per_category"], s3_endpoint=s3_endpoint, tracking_uri=tracking_uri,
            airflow_run_id=run_id)

    evaluate = mapped_pod_job_task(task_id="evaluate", pod_jobs=plan_evaluations(check_evalsets.output),
                                   max_pod_timeout_s=eval_pod_timeout_s(HARDWARE), **pool_kwargs(HARDWARE))

    @task(task_id="plan_report")
    def plan_report(evaluations: list, hygiene: dict, params: dict | None = None, dag_run=None,
                    run_id: str | None = None) -> list:
        """The report pod job over this week's eval results."""
        from airflow.sdk import BaseHook

        return [drift_plan.report_job(
            SETTINGS, model=params["model"], week=drift_plan.week_of(dag_run.logical_date, dag_run.run_after),
            evaluations=list(evaluations), evalsets=hygiene["evalsets"], weeks=params["weeks"],
            threshold=params["threshold"], fail_on=params["fail_on"], categories=params["categories"],
            hardware_class=HARDWARE.name, tracking_uri=BaseHook.get_connection("llmops_mlflow").host,
            airflow_run_id=run_id)]

    report = mapped_pod_job_task(task_id="report", pod_jobs=plan_report(evaluate.output, check_evalsets.output),
                                 max_pod_timeout_s=drift_plan.REPORT_TIMEOUT_S)

    @task(task_id="check_drift", multiple_outputs=True)
    def check_drift(results: list) -> dict:
        """Fails the run (a verdict: no retry) when the written report flagged drift."""
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return drift_plan.check(next(iter(results or []), None))
        except drift_plan.DriftAlert as exc:
            raise AirflowFailException(str(exc)) from exc

    check_drift(report.output)
