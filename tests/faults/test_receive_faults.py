"""The S3 endpoint down for a minute during ``receive``.

moto keeps its data in memory, so the endpoint is not stopped: the receive job reaches it
through a :class:`FaultProxy` that refuses every connection for 60 s from the job's first read of
the weights file. The job is retried the way Airflow retries the ``receive`` task (its retries and
retry delay, read from the DAG; the delay's lower bound, without Airflow's jitter). A verdict
(exit 2) is not retried: it would mean the outage got a good drop quarantined.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from llmops.core.podjob import VERDICT_EXIT_CODE
from llmops.io import s3 as s3io
from tests.faults.conftest import EXPERIMENT, ROOT, FaultRecord, Jobs
from tests.faults.netfault import FaultProxy

pytestmark = pytest.mark.integration

OUTAGE_S = 60.0


def _retry_policy(task_id: str) -> tuple[int, float, bool]:
    """(retries, retry delay in seconds, exponential backoff) of a ``model_refresh`` task."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "model_refresh.py"))
    assert not bag.import_errors, bag.import_errors
    task = bag.dags["model_refresh"].get_task(task_id)
    return int(task.retries), task.retry_delay.total_seconds(), bool(task.retry_exponential_backoff)


def test_s3_down_for_a_minute_during_receive(fault: FaultRecord, platform, publish, models_dir: Path, jobs: Jobs,
                                             s3: Any, buckets: tuple[str, str]) -> None:
    """S3 endpoint refuses connections for 60 s, from receive's first read of the weights"""
    import mlflow

    drops, models = buckets
    model = f"fault-receive-{uuid.uuid4().hex[:8]}"
    uri = publish(models_dir / "good", model, "r1")
    _, prefix = s3io.parse_s3_uri(uri)
    published = {o.key: o.etag for o in s3io.list_prefix(s3, drops, prefix)}
    retries, delay_s, exponential = _retry_policy("receive")

    attempts: list[int] = []
    with FaultProxy(platform.endpoints.s3_port) as proxy:
        proxy.arm(b"/model.safetensors", mode="refuse", seconds=OUTAGE_S)
        for attempt in range(1, retries + 2):
            run = jobs.run("receive", "--drop-uri", uri, "--experiment", EXPERIMENT, "--models-bucket", models,
                           "--airflow-run-id", f"faults__{model}", "--airflow-try", str(attempt),
                           env={"AWS_ENDPOINT_URL": proxy.url})
            attempts.append(run.returncode)
            if attempt == 1:
                assert proxy.outages, f"the outage never started: receive read no weights\n{run.output[-3000:]}"
                fault.injected = proxy.outages[0].started
            assert run.returncode != VERDICT_EXIT_CODE, f"the outage got the drop rejected:\n{run.output[-3000:]}"
            if run.returncode == 0 or attempt > retries:
                break
            time.sleep(delay_s * (2 ** (attempt - 1) if exponential else 1))  # Airflow's retry delay
        fault.removed = proxy.outages[0].ended

    assert run.returncode == 0, f"receive still failing after {len(attempts)} tries {attempts}:\n{run.output[-3000:]}"
    assert run.result["status"] == "ok"
    fault.recover(f"passed on try {len(attempts)} of {retries + 1} (exit codes {attempts})")
    # Never quarantined, nothing lost: the drop as published, no quarantine copy, no rejection run.
    assert s3io.list_prefix(s3, drops, f"quarantine/{prefix}") == []
    assert {o.key: o.etag for o in s3io.list_prefix(s3, drops, prefix)} == published
    assert sorted(f["path"] for f in run.result["files"]) == sorted(
        k[len(prefix):] for k in published if not k.endswith("manifest.json"))
    mlflow.set_tracking_uri(platform.endpoints.mlflow_url)
    rejected = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list",
                                  filter_string=f"tags.model = '{model}' and tags.status = 'rejected'")
    assert rejected == []
    fault.note(f"outage {OUTAGE_S:.0f} s; retry delay {delay_s:.0f} s{' doubling' if exponential else ''}")
