"""
### Weight-drop watcher

Starts **one `model_refresh` run per new weight drop**, exactly once.

A training pipeline (or `python -m llmops.jobs.publish_drop`) writes a checkpoint to
`s3://<drops bucket>/<model>/<revision>/`, its `manifest.json` last, then an arrival record
`_arrivals/<UTC time>__<model>__<revision>.json`. This DAG runs continuously:

1. **wait_for_new_drops**: a deferrable sensor (in the triggerer, no worker slot held) lists
   the arrival records after the remembered cursor, and every `LLMOPS_DROP_SWEEP_INTERVAL_S`
   sweeps every manifest (for drops written without an arrival record). It only reads.
2. **trigger_refresh** (mapped): triggers `model_refresh` for each new drop with a run id
   derived from the model and the weight digest (`drop__<model>__<hex24>`, `__g<n>` for a drop
   republished after its claim was released); a run that exists already is skipped.
3. **record_claims** (whatever the triggers did): records the claim
   `_claims/<model>/<hex>.json` of each drop **whose run exists**, records refusals (a
   manifest under a model or revision name that breaks the naming rule), and moves the cursor
   past what is settled. A failed trigger leaves its drop unclaimed: a later poll retries it.

A re-delivered drop (same weights, same model, any revision) is never processed twice: its
claim is held, and Airflow would refuse a second run with the same id anyway.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from llmops.config import dag_defaults, settings
from llmops.refresh.drop_sensor import WeightDropSensor

SETTINGS = settings.load()
WAIT = timedelta(hours=23)

with DAG(
    dag_id="weight_drop_watcher",
    description="Trigger model_refresh once per new weight drop (deferrable sensor on the drops bucket)",
    schedule="@continuous",
    start_date=dag_defaults.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dag_defaults.tags("refresh", "sensor"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
) as dag:
    new_drops = WeightDropSensor(
        task_id="wait_for_new_drops",
        bucket="{{ var.value.llmops_bucket_drops }}",
        poll_interval_s=SETTINGS.drop_poll_interval_s,
        sweep_interval_s=SETTINGS.drop_sweep_interval_s,
        deferrable=True,
        soft_fail=True,  # a quiet day ends the run as skipped; the next continuous run waits again
        # The wait in the triggerer is bounded by the sensor's own timeout, not by the 20 minutes
        # of a light task (Airflow caps a deferral at the execution_timeout).
        timeout=WAIT.total_seconds(),
        execution_timeout=WAIT,
    )

    @task(task_id="plan_triggers")
    def plan_triggers(scan: dict) -> list[dict]:
        """The model_refresh runs to trigger: a deterministic run id and the conf, per new drop."""
        from llmops.refresh.drop_watch import trigger_kwargs

        return trigger_kwargs(scan["drops"])

    triggers = TriggerDagRunOperator.partial(
        task_id="trigger_refresh",
        trigger_dag_id="model_refresh",
        skip_when_already_exists=True,  # a retry, or a run triggered before a crash: nothing to do
    ).expand_kwargs(plan_triggers(new_drops.output))

    @task(task_id="record_claims", trigger_rule="all_done", multiple_outputs=False)
    def record_claims(scan: dict | None, run_id: str | None = None) -> dict:
        """Claim each drop whose model_refresh run exists; record refusals; move the cursor."""
        from airflow.sdk.exceptions import AirflowSkipException
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        from llmops.io.s3 import client_from_connection
        from llmops.refresh import drop_watch

        if not scan:  # the sensor found nothing (soft fail): nothing to record
            raise AirflowSkipException("no scan to record")

        def run_exists(refresh_run_id: str) -> bool:
            return RuntimeTaskInstance.get_dr_count(dag_id="model_refresh", run_ids=[refresh_run_id]) > 0

        return drop_watch.record_claims(client_from_connection(), drop_watch.Scan.from_dict(scan), run_exists,
                                        claimed_by=run_id or "unknown")

    triggers >> record_claims(new_drops.output)
