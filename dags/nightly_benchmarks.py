"""
### Nightly benchmarks per hardware class, regressions against each class's own history

Every night (cron, time-zone aware, no catch-up) and whenever `benchmark_change_watcher`
reports a changed hardware config or runtime image (asset `benchmark_targets_changed`), this
DAG re-benchmarks the served models on each hardware class and says, per class, whether
anything got worse:

1. **plan**: the served models come from the MLflow registry (`champion`, and `challenger` if
   any); with no champion (a fresh platform) the configured default checkpoint is benchmarked
   and the runs say so (`llmops.model_source`). One pod job per (class x model), filed under
   its GPU pool.
2. **bench_<pool>** (mapped pod jobs, one per class x model): vLLM serves the model with the
   class's config as a sidecar; the benchmark client (`vllm bench serve`, in the vLLM image)
   runs the class's fixed workload matrix (`include/benchmarks/<class>.yaml`: input/output
   lengths, request rates including unbounded, concurrency). One class failing (pod error,
   OOM) never blocks the others. Low priority and one pod per pool at a time: nightly runs
   never starve the refresh pipeline of GPUs.
3. **record_and_judge**: one MLflow run per (class, model version, workload) in experiment
   `llmops-benchmarks` (TTFT/TPOT/ITL/E2E p50/p90/p99, throughput, goodput under the class
   SLOs; config hash, runtime version and image digest as params); each run is judged against
   the rolling median of the class's last nights on the same config hash, with a tolerance
   widened by the class's observed night-to-night noise. A config change starts a new
   baseline. A summary run holds the ratio table (Markdown/HTML) and a chart.
4. **check**: fails when any class regressed or failed, naming each, after every class's
   results are recorded.

`vllm_overrides` runs a *what-if*: extra `vllm serve` flags (e.g. `["--max-num-seqs", "32"]`)
judged against the class's baseline, never added to it.
"""

from __future__ import annotations

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, task

from llmops.benchmarks import config, plan
from llmops.benchmarks.assets import TARGETS_CHANGED
from llmops.config import dag_defaults, settings
from llmops.core.hardware import load_all
from llmops.launch import mapped_pod_job_task

SETTINGS = settings.load()
BENCH = config.load()
ALL_CLASSES = load_all(SETTINGS.hardware_configs_dir)
GROUPS = plan.pool_groups(ALL_CLASSES.values())
MAX_BENCH_POD_S = plan.max_benchmark_timeout_s(ALL_CLASSES.values(), BENCH.matrices_dir)
# Benchmarks yield to the refresh pipeline when both wait for the same pool's slots.
LOW_PRIORITY = {"priority_weight": 1, "weight_rule": "absolute"}

with DAG(
    dag_id="nightly_benchmarks",
    description="Nightly vLLM benchmarks per hardware class, regressions flagged against each class's history",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(BENCH.cron, timezone=BENCH.timezone),
                                 assets=TARGETS_CHANGED),
    start_date=dag_defaults.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dag_defaults.tags("benchmarks"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
    params={
        "hardware_classes": Param(list(BENCH.hardware_classes), type="array", minItems=1,
                                  maxItems=len(ALL_CLASSES), uniqueItems=True,
                                  items={"type": "string", "enum": sorted(ALL_CLASSES)},
                                  description="Hardware classes to benchmark (asset-triggered runs: the changed ones)"),
        "model": Param(BENCH.model, type="string", pattern="^[a-z0-9][a-z0-9-]{0,62}$", maxLength=63,
                       description="Registered model whose champion (and challenger) are benchmarked"),
        "include_challenger": Param(True, type="boolean", description="Also benchmark the challenger, if any"),
        "vllm_overrides": Param([], type="array", items={"type": "string", "maxLength": dag_defaults.ARG_MAX_LENGTH},
                                maxItems=dag_defaults.ARGS_MAX_ITEMS,
                                description="What-if: extra vLLM flags on top of each class config (not baselined)"),
    },
) as dag:

    @task(task_id="plan", multiple_outputs=True, **LOW_PRIORITY)
    def plan_benchmarks(params: dict | None = None, dag_run=None, triggering_asset_events=None) -> dict:
        """The pod jobs of this run, by pool group; asset-triggered runs take only the changed classes."""
        from airflow.sdk import BaseHook

        from llmops.benchmarks import changes, nightly

        classes = list(params["hardware_classes"])
        events = [dict(e.extra or {}) for evs in (triggering_asset_events or {}).values() for e in evs]
        if events:
            classes = changes.classes_from_events(events, list(BENCH.hardware_classes))
        from airflow.sdk.exceptions import AirflowFailException

        from llmops.serving.vllm_args import VllmArgsError

        try:
            return nightly.plan_night(
                SETTINGS, BENCH, classes=classes, model=params["model"],
                include_challenger=params["include_challenger"], vllm_overrides=params["vllm_overrides"],
                tracking_uri=BaseHook.get_connection("llmops_mlflow").host,
                s3_endpoint=BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url"),
                groups=list(GROUPS))
        except VllmArgsError as exc:  # a refused flag in the Params: a retry would refuse it again
            raise AirflowFailException(str(exc)) from exc

    planned = plan_benchmarks()
    bench_outputs = []
    for group, (pool, slots) in GROUPS.items():

        @task(task_id=f"jobs_{group}", **LOW_PRIORITY)
        def pod_jobs_of(planned: dict, group: str = group) -> list:
            """This pool group's pod jobs (Airflow maps only over a task's whole return value)."""
            from llmops.benchmarks import nightly

            return planned[nightly.jobs_key(group)]

        bench = mapped_pod_job_task(task_id=f"bench_{group}", pod_jobs=pod_jobs_of(planned),
                                    pool=pool, pool_slots=slots, max_active_tis_per_dagrun=1,
                                    max_pod_timeout_s=MAX_BENCH_POD_S, **LOW_PRIORITY)
        bench_outputs.append(bench.output)

    @task(task_id="record_and_judge", trigger_rule="all_done", multiple_outputs=True, **LOW_PRIORITY)
    def record_and_judge(planned: dict, *results: list, run_id: str | None = None, dag_run=None) -> dict:
        """Every workload run into MLflow, judged against its class's rolling baseline; the summary logged."""
        from airflow.sdk import BaseHook

        from llmops.benchmarks import nightly

        flat = [r for per_group in results for r in (per_group or [])]
        return nightly.record_and_judge(BENCH, targets=planned["targets"], results=flat, skipped=planned["skipped"],
                                        tracking_uri=BaseHook.get_connection("llmops_mlflow").host,
                                        airflow_run_id=run_id, trigger=nightly.trigger_of(dag_run.run_type))

    report = record_and_judge(planned, *bench_outputs)

    @task(task_id="check", trigger_rule="all_done", multiple_outputs=True)
    def check(report: dict | None) -> dict:
        """Fail the run, naming every regressed or failed class, once all results are recorded (no retry: a verdict)."""
        from airflow.sdk.exceptions import AirflowFailException

        from llmops.benchmarks import nightly

        try:
            return nightly.check(report)
        except nightly.BenchmarkCheckFailed as exc:
            raise AirflowFailException(str(exc)) from exc

    check(report)
