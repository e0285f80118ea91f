"""
### Model rollback: one step back to the previous champion

Triggered by hand from the Airflow UI when the serving champion misbehaves. In one run:
the MLflow registry alias `champion` moves back to the version `previous` points at (and
`previous` to the rolled-back version, so a second rollback undoes the first), the
rolled-back version is tagged `llmops.status=rolled_back`, and
`deployments/<model>/current.json` in the models bucket is rewritten to the restored
champion with the full history kept (each change also as its own `history/` object).

Routing follows in the same run: in a cluster (`LLMOPS_CANARY_ROUTER=gateway`) the
`<model>-stable` Deployment is rolled to the restored champion (its init container verifies
the weight digest) and, once rolled out, the model's HTTPRoute sends it 100% of the traffic.
On the embedded default nothing serves between runs: the next serving pod reads `current.json`.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from llmops.config import dag_defaults, settings
from llmops.serving.assets import SERVING_CHANGED

SETTINGS = settings.load()

with DAG(
    dag_id="model_rollback",
    description="Move the champion alias back to the previous version and record it in current.json",
    schedule=None,
    start_date=dag_defaults.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dag_defaults.tags("refresh", "rollback"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
    params={
        "model": Param("tiny-chat", type="string", pattern="^[a-z0-9][a-z0-9-]{0,62}$", maxLength=63,
                       description="Registered model name in MLflow"),
    },
) as dag:

    @task(task_id="rollback", multiple_outputs=True, outlets=[SERVING_CHANGED])
    def rollback(params: dict | None = None, run_id: str | None = None) -> dict:
        """Aliases back one step, then routing to the restored champion (idempotent per run: a
        retry after success moves nothing twice)."""
        from airflow.sdk import BaseHook, Variable

        from llmops.refresh import actions

        return actions.rollback(
            SETTINGS, model=params["model"], run_id=run_id,
            tracking_uri=BaseHook.get_connection("llmops_mlflow").host,
            models_bucket=Variable.get("llmops_bucket_models"),
        )

    rollback()
