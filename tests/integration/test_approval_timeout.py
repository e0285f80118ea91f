"""An unanswered approval ends, on its own, in the outcome the user chose in Params.

Airflow's own pieces run for real: ``dag.test()`` parks the approval in ``awaiting_input``; the
scheduler's timeout sweep (``check_awaiting_input_timeouts``) resolves it. Only the clock is
moved: the test sets the wait's deadline into the past instead of waiting a whole minute.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tests.integration.conftest import BackgroundLoop

pytestmark = pytest.mark.integration


def _dag(dag_id: str):
    from airflow.sdk import DAG, Param, task

    from llmops.config import dag_defaults
    from llmops.refresh.approval import TimedApprovalOperator

    with DAG(dag_id=dag_id, schedule=None, start_date=dag_defaults.START_DATE, catchup=False,
             params={"wait_min": Param(1, type="integer", minimum=1),
                     "on_timeout": Param("reject", type="string", enum=["reject", "approve"])}) as dag:
        approve = TimedApprovalOperator(task_id="approve", subject="go?", timeout_param="wait_min",
                                        outcome_param="on_timeout", fail_on_reject=True)

        @task(task_id="after_approval")
        def after_approval() -> str:
            return "went on"

        @task(task_id="on_refusal", trigger_rule="all_failed")
        def on_refusal() -> str:
            return "rolled back"

        approve >> [after_approval(), on_refusal()]
    _serialize(dag)
    return dag


def _serialize(dag) -> None:
    """Record a DAG defined in this test file in the metadata DB, as the DAG processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db("dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(),
                                         session)


class TimeoutSweeper(BackgroundLoop):
    """Plays the scheduler's part: once the approval waits, its deadline passes and the sweep runs."""

    def __init__(self, dag_id: str) -> None:
        super().__init__(name=f"sweeper-{dag_id}")
        self.dag_id = dag_id
        self.deadlines: list = []

    def _run(self) -> None:
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
        from airflow.models import TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState
        from airflow.utils.timezone import utcnow

        runner = SchedulerJobRunner(job=Job())
        while not self._stop.is_set():
            with create_session() as session:
                waiting = session.query(TaskInstance).filter(
                    TaskInstance.dag_id == self.dag_id, TaskInstance.state == TaskInstanceState.AWAITING_INPUT).all()
                for ti in waiting:
                    self.deadlines.append(ti.trigger_timeout)
                    ti.trigger_timeout = utcnow() - timedelta(seconds=1)  # the minute has passed
            if waiting:
                runner.check_awaiting_input_timeouts()
            time.sleep(1)


@pytest.mark.parametrize(("outcome", "ran", "approval_state"), [
    ("reject", "on_refusal", "failed"),
    ("approve", "after_approval", "success"),
])
def test_an_unanswered_approval_times_out_into_the_param_outcome(airflow_db, outcome, ran, approval_state) -> None:
    from llmops.refresh.approval import timeout_answer

    dag = _dag(f"approval_timeout_{outcome}")
    with TimeoutSweeper(dag.dag_id) as sweeper:
        run = dag.test(run_conf={"wait_min": 3, "on_timeout": outcome})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert sweeper.deadlines, "the approval never waited"
    assert states["approve"] == approval_state and states[ran] == "success", states
    other = ({"after_approval", "on_refusal"} - {ran}).pop()
    assert states[other] in ("skipped", "upstream_failed"), states
    assert timeout_answer(outcome) in ("Reject", "Approve")


def test_an_unknown_timeout_outcome_is_refused_by_name() -> None:
    from llmops.refresh.approval import timeout_answer

    with pytest.raises(ValueError, match="'promote-anyway' is not one of"):
        timeout_answer("promote-anyway")
