"""The Airflow scheduler restarted in the middle of a refresh run, on the embedded platform's real Airflow.

Airflow runs as ``make up`` runs it (``airflow standalone``: scheduler, dag-processor, triggerer
and API server, LocalExecutor) against the session's S3 endpoint and MLflow. A ``model_refresh``
run for a first model (no canary) is triggered through the REST API; while its ``qualify_cpu``
task runs, the scheduler and everything it runs (executor workers, the task, its local pod) are
SIGKILLed, as when its container dies, and a new scheduler is started. The run must end, in
success or failed by a verdict it names, and the model's lease must be free.

The embedded platform sets ``orphaned_tasks_check_interval`` to 30 s (Airflow's default is
300 s), so a restarted scheduler resets the orphaned task within half a minute, here as in
``make up``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from llmops.embedded.airflow_api import AirflowApi
from llmops.embedded.services import Service, free_port, tail
from llmops.refresh import lease
from tests.faults import processes
from tests.faults.conftest import FaultRecord

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

DAG_ID = "model_refresh"
AIRFLOW_ENV = {
    # The test session's own settings (tests/conftest.py) must not reach this Airflow.
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
}
ACTIVE = {"queued", "running", "scheduled", "up_for_retry", "up_for_reschedule", "restarting", "deferred", None}


def _states(api: AirflowApi, run_id: str) -> dict[str, Any]:
    return {(ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"): ti["state"]
            for ti in api.task_instances(DAG_ID, run_id)}


def _wait_running(api: AirflowApi, run_id: str, task_id: str, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = _states(api, run_id)
        if any(k.split("[")[0] == task_id and v == "running" for k, v in states.items()):
            return
        run = api._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            raise AssertionError(f"run ended {run['state']} before {task_id} ran: {states}")
        time.sleep(1.0)
    raise TimeoutError(f"{task_id} never ran within {timeout_s:.0f}s: {_states(api, run_id)}")


def _scheduler_of(standalone: Service) -> int:
    pid = standalone.pid()
    assert pid is not None, "airflow standalone is not running"
    found = [child for child in processes.children(pid) if processes.cmdline(child).rstrip().endswith("scheduler")]
    assert len(found) == 1, [processes.cmdline(c) for c in processes.children(pid)]
    return found[0]


def test_scheduler_restarted_mid_refresh(fault: FaultRecord, platform, publish, models_dir: Path,
                                         vllm_runtime: Path, model_cache: list[str], s3: Any,
                                         buckets: tuple[str, str]) -> None:
    """Airflow scheduler (with its workers and the running task) SIGKILLed during qualify, then restarted"""
    _, models = buckets
    standalone = platform.airflow_service()
    standalone.env.update(AIRFLOW_ENV)
    health_port = free_port()
    scheduler = Service(name="airflow-scheduler", argv=[str(platform.venv_bin / "airflow"), "scheduler"],
                        port=health_port, health_url=f"http://127.0.0.1:{health_port}/health",
                        run_dir=platform.run_dir, start_timeout_s=240,
                        env={**standalone.env, "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                             "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(health_port)})
    model = f"fault-sched-{uuid.uuid4().hex[:8]}"
    model_cache.append(model)
    try:
        standalone.start()
        api = AirflowApi(platform.endpoints.airflow_url, "admin", platform.admin_password() or "")
        for pool in platform.settings_file.pools:
            api.upsert_pool(pool.name, pool.slots, pool.description)
        api.wait_for_dag(DAG_ID, timeout_s=300)
        api.unpause(DAG_ID)
        run_id = api.trigger(DAG_ID, {"model": model, "drop_uri": publish(models_dir / "good", model, "r1"),
                                      "hardware_classes": ["cpu"]})
        _wait_running(api, run_id, "qualify_cpu")
        time.sleep(3.0)
        fault.inject()
        killed = processes.kill_tree(_scheduler_of(standalone))
        fault.note(f"{len(killed)} processes killed")
        scheduler.start()  # a new scheduler, beside the rest of standalone
        fault.remove()
        state = api.wait_for_run(DAG_ID, run_id, timeout_s=1200)
        states = _states(api, run_id)
        holder = lease.read_lease(s3, models, model)
        fault.recover(f"run {state}; lease {'free' if holder is None else 'HELD by ' + holder.run_id}; "
                      f"qualify_cpu tries: {_tries(api, run_id, 'qualify_cpu')}")
        log = tail(standalone.log_file, 15) + "\n" + tail(scheduler.log_file, 15)
        assert not {k: v for k, v in states.items() if v in ACTIVE}, f"tasks left unfinished: {states}\n{log}"
        failed = {k for k, v in states.items() if v in ("failed", "upstream_failed")}
        assert state == "success" or failed <= {"gate", "check_canary", "promote"}, (
            f"the run failed without a verdict: {states}\n{log}")
        assert states["release_model"] == "success", states
        assert holder is None, f"the model's lease is stuck with run {holder.run_id}"
        orphan_check_s = standalone.env["AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL"]
        fault.note(f"orphaned_tasks_check_interval {orphan_check_s} s (the embedded platform's setting)")
    finally:
        scheduler.stop()
        standalone.stop()
        # Pods of the killed try, if any outlived it, are ours to end.
        processes.kill(processes.referring_to(platform.data_dir / "pods"))


def _tries(api: AirflowApi, run_id: str, task_id: str) -> list[int]:
    return [ti["try_number"] for ti in api.task_instances(DAG_ID, run_id) if ti["task_id"] == task_id]
