"""
### Weight-drop watcher

Starts **one `model_refresh` run per new weight drop**, exactly once.

A training pipeline (or `python -m llmops.jobs.publish_drop`) writes a checkpoint to
`s3://<drops bucket>/<model>/<revision>/` and its `manifest.json` last. This DAG runs
continuously: a deferrable sensor waits in the triggerer (no worker slot held) until a
drop appears whose weights have not been seen, claims it with a conditional write of
`_claims/<weight digest>.json`, and triggers `model_refresh` with a run id derived from the
weight digest. A re-delivered drop (same weights, any revision) is never processed twice:
its claim exists, and Airflow would refuse a second run with the same id anyway.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from llmops.config import dag_defaults, settings
from llmops.refresh.drop_sensor import WeightDropSensor

SETTINGS = settings.load()

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
        deferrable=True,
        soft_fail=True,  # a quiet day ends the run as skipped; the next continuous run waits again
    )

    @task(task_id="claim_drops")
    def claim_drops(drops: list[dict], run_id: str | None = None) -> list[dict]:
        """Claim each drop (conditional write); only drops claimed by this run start a refresh."""
        from llmops.io.s3 import client_from_connection
        from llmops.refresh.drop_watch import Drop, claim

        s3 = client_from_connection()
        claimed = []
        for data in drops:
            drop = Drop(**{k: data[k] for k in ("bucket", "model", "revision", "identity", "manifest_etag",
                                                "arrived_at")})
            if claim(s3, drop, claimed_by=run_id or "unknown"):
                claimed.append({"trigger_run_id": drop.run_id,
                                "conf": {"model": drop.model, "drop_uri": drop.uri}})
        return claimed

    TriggerDagRunOperator.partial(
        task_id="trigger_refresh",
        trigger_dag_id="model_refresh",
        skip_when_already_exists=True,
    ).expand_kwargs(claim_drops(new_drops.output))
