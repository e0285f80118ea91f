"""The canary pod killed mid-step, and the refresh run's teardowns after it.

The canary pod (stable and canary vLLM sidecars, nginx splitting traffic inside the controller's
container) runs with the local launcher under a lease held as ``claim_model`` holds it. Once
the canary takes 25% of the traffic, the pod is killed the way Kubernetes deletes a pod and the
launcher's ``on_kill`` stops one (every container: SIGTERM, grace period, SIGKILL). Then the
DAG's teardowns run: ``restore_routing`` (``restore_champion_routing``) and ``release_model``.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from llmops.canary.plan import canary_pod_job
from llmops.config import settings as settings_mod
from llmops.core.hardware import load_hardware_class
from llmops.embedded.services import port_in_use
from llmops.refresh import actions, lease
from llmops.serving.deployments import restore_champion_routing
from tests.faults import processes
from tests.faults.conftest import EXPERIMENT, FaultRecord
from tests.faults.pods import PodThread

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

SPEC = {
    "steps": [{"weight": 25, "window_s": 30.0}, {"weight": 50, "window_s": 30.0}],
    "failure_limit": 2, "min_requests": 10, "min_quality_samples": 5, "min_quality": 0.5,
    "max_ttft_p95_ratio": 5.0,
}


def _ports(lines: list[str]) -> list[int]:
    """Every port the pod listened on: the servers' ``--port`` and the router's address."""
    ports = [int(p) for line in lines if "starting container" in line for p in re.findall(r"--port (\d+)", line)]
    ports += [int(p) for line in lines for p in re.findall(r"router \w+ at http://127\.0\.0\.1:(\d+)", line)]
    return ports


def test_canary_pod_killed_mid_step(fault: FaultRecord, platform, models_dir: Path, vllm_runtime: Path,
                                    s3: Any, buckets: tuple[str, str], tmp_path: Path) -> None:
    """canary pod killed (every container) while the canary takes 25% of the traffic"""
    settings = settings_mod.load()
    _, models = buckets
    model = f"fault-canary-{uuid.uuid4().hex[:8]}"
    run_id = f"faults__{model}"
    held, why = lease.acquire(s3, models, model, run_id, holder_alive=lambda _: True)
    assert held, why
    hw = load_hardware_class("cpu", settings.hardware_configs_dir)
    job = canary_pod_job(settings, hw, stable_model_path=f"{models_dir}/good", canary_model_path=f"{models_dir}/better",
                         served_model_name=model, spec=SPEC, experiment=EXPERIMENT,
                         stable_image=settings.vllm_image, canary_image=settings.vllm_image, model_stable=f"{model}@1",
                         model_canary=f"{model}@2", tags={"model": model, "llmops.stage": "canary"},
                         mlflow_tracking_uri=platform.endpoints.mlflow_url, exit_zero_on_rollback=True)

    pod = PodThread(settings, job, tmp_path / "canary").start()
    pod.wait_for(r"routed 25% to the canary")
    time.sleep(5.0)  # mid-window: requests in flight through nginx to both servers
    ports = _ports(pod.lines)
    fault.inject()
    pod.runner.kill()  # the pod is deleted: what the operator's on_kill does
    pod.join()
    assert pod.failure is not None, "a killed canary pod must fail its task"

    # The run's teardowns, as the DAG runs them whatever happened to the canary.
    restored = restore_champion_routing(settings, model)
    released = actions.release_model(model, run_id)
    left = processes.referring_to(pod.workdir)
    listening = [port for port in ports if port_in_use(port)]
    fault.recover(f"pod failed ({pod.failure.exit_code}); routing: {restored['action']} ({restored['router']}); "
                  f"lease released")
    assert restored["router"] == settings.canary_router
    if settings.canary_router == "gateway":
        assert restored["weights"] == [100, 0]
    assert released is True and lease.read_lease(s3, models, model) is None, "the model's lease is stuck"
    # Nothing serves the canary any more: no container or proxy of the pod, no port of it answering.
    assert left == [], [processes.cmdline(pid) for pid in left]
    assert len(ports) == 3 and listening == [], (ports, listening)
