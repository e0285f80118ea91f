"""The vLLM sidecar killed during qualify.

The candidate's qualification pod job (``plan.qualification_jobs``: fetch-weights init container,
vLLM sidecar, eval job) runs with the local launcher; once the eval job has found the server
healthy and is sending requests, the sidecar's process group is SIGKILLed. A dead server is not a
verdict: the pod must fail with a retryable exit code, and the retry (a new pod) must pass, with
one finished eval run and one gate verdict for the class.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from llmops.config import settings as settings_mod
from llmops.core.hardware import load_hardware_class
from llmops.core.podjob import VERDICT_EXIT_CODE
from llmops.refresh import plan, qualify
from tests.faults import processes
from tests.faults.conftest import FaultRecord, Jobs, receive_and_stage
from tests.faults.pods import PodThread

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

EVALSET = "include/evalsets/synthetic_chat_v1.yaml"


def _runs(model: str, stage: str) -> list[Any]:
    import mlflow

    return mlflow.search_runs(experiment_names=[plan.EXPERIMENT], output_format="list",
                              filter_string=f"tags.model = '{model}' and tags.`llmops.stage` = '{stage}'")


def test_vllm_sidecar_killed_during_qualify(fault: FaultRecord, platform, publish, models_dir: Path,
                                            vllm_runtime: Path, model_cache: list[str], jobs: Jobs,
                                            buckets: tuple[str, str], tmp_path: Path) -> None:
    """vLLM sidecar SIGKILLed while the eval job is sending it requests, then the pod retried"""
    import mlflow

    settings = settings_mod.load()
    model = f"fault-qualify-{uuid.uuid4().hex[:8]}"
    model_cache.append(model)
    staged = receive_and_stage(jobs, publish(models_dir / "good", model, "r1"), model, buckets[1])
    version = str(staged["model_version"])
    candidate = plan.candidate_target(staged)  # served on the runtime its drop pins
    hw = load_hardware_class("cpu", settings.hardware_configs_dir)
    [job] = plan.qualification_jobs(settings, hw, model=model, targets=[candidate], evalset_config=EVALSET,
                                    s3_endpoint=platform.endpoints.s3_url, tracking_uri=platform.endpoints.mlflow_url)

    first = PodThread(settings, job, tmp_path / "try-1").start()
    first.wait_for(r"server .* healthy after")  # the eval job is about to send its requests
    time.sleep(2.0)
    sidecar = [pid for pid in processes.referring_to(first.workdir) if "vllm serve" in processes.cmdline(pid)]
    assert sidecar, "no vLLM process found in the pod"
    os.killpg(os.getpgid(sidecar[0]), signal.SIGKILL)
    fault.inject()
    first.join()
    assert first.failure is not None, (
        f"the pod passed although its server was killed: a result from a dead server "
        f"({(first.result or {}).get('errors')} of {(first.result or {}).get('items')} items errored, "
        f"eval run {(first.result or {}).get('mlflow_run_id')})")
    assert first.failure.exit_code not in (None, 0, VERDICT_EXIT_CODE), (
        f"a killed server must fail the pod retryably, not as a verdict: {first.failure}")
    assert processes.referring_to(first.workdir) == [], "a container of the failed pod outlived it"
    fault.remove()

    retry = PodThread(settings, job, tmp_path / "try-2").start().join()
    assert retry.failure is None, f"the retry failed: {retry.failure}"
    result = retry.result
    assert (result["hardware_class"], result["role"], result["errors"]) == ("cpu", "candidate", 0)
    try:
        summary = qualify.judge_qualification(settings, model=model, candidate_version=version,
                                              evalset_config=EVALSET, results=[result],
                                              tracking_uri=platform.endpoints.mlflow_url)
        verdict = "passed"
    except qualify.GateFailed as exc:
        summary, verdict = None, f"rejected: {str(exc).splitlines()[1] if len(str(exc).splitlines()) > 1 else exc}"
    mlflow.set_tracking_uri(platform.endpoints.mlflow_url)
    evals = _runs(model, "qualify")
    assert [r.info.status for r in evals if r.info.status == "FINISHED"] == ["FINISHED"], (
        f"one finished eval run per class, found {[(r.info.run_id, r.info.status) for r in evals]}")
    assert [r.info.run_id for r in evals if r.info.status == "FINISHED"] == [result["mlflow_run_id"]]
    gates = _runs(model, "gate")
    assert [(r.data.tags["hardware_class"], r.data.tags["model_version"]) for r in gates] == [("cpu", version)]
    if summary is not None:
        assert list(summary["verdicts"]) == ["cpu"]
    fault.recover(f"try 1 failed with exit {first.failure.exit_code}; retry passed; one eval run and one gate "
                  f"verdict for cpu ({verdict})")
