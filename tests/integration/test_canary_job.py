"""The canary pod job end to end: two real vLLM servers, a real nginx split, real MLflow.

The pod (stable and canary vLLM sidecars, the controller as the main container) runs through
the local launcher exactly as a task would. Two short steps (25% -> 50%, 8 s windows) keep
each test near a minute and a half, most of it the two servers starting.

* a healthy canary (the ``better`` checkpoint) is promoted to 100%;
* a canary served with a config regression (``--max-model-len`` too small for the prompts:
  every request is refused with HTTP 400) is rolled back at once: exit code 4, weight 0, and
  the breach-to-rollback time is measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from llmops.canary.plan import canary_pod_job
from llmops.config import settings as settings_mod
from llmops.core.hardware import load_hardware_class
from llmops.launch.local import LocalPodRunner, PodFailed

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

EXPERIMENT = "llmops-canary-tests"
SERVED = "tiny-chat"
SPEC = {
    "steps": [{"weight": 25, "window_s": 8.0}, {"weight": 50, "window_s": 8.0}],
    # One failed window aborts: the rollback follows the breaching window directly.
    "failure_limit": 1,
    "min_requests": 10,
    "min_quality_samples": 5,
    "min_quality": 0.5,
    # Both servers share two cores with the replayed traffic here: latency is noisy, so the
    # TTFT ratio is loose; the errors and the quality of the answers decide these tests.
    "max_ttft_p95_ratio": 5.0,
}


def _run_canary(tmp_path: Path, canary: str, **kwargs: Any) -> tuple[dict[str, Any], PodFailed | None]:
    settings = settings_mod.load()
    hw = load_hardware_class("cpu", settings.hardware_configs_dir)
    job = canary_pod_job(settings, hw, stable_model_path="/models/tiny-chat/good",
                         canary_model_path=f"/models/tiny-chat/{canary}", served_model_name=SERVED, spec=SPEC,
                         stable_image=settings.vllm_image, canary_image=settings.vllm_image,
                         experiment=EXPERIMENT, model_stable="tiny-chat/good", model_canary=f"tiny-chat/{canary}",
                         tags={"test": canary}, mlflow_tracking_uri=os.environ["MLFLOW_TRACKING_URI"], **kwargs)
    workdir = tmp_path / "pod"
    failure = None
    try:
        LocalPodRunner(settings).run(job, workdir)
    except PodFailed as exc:
        failure = exc
    result = json.loads((workdir / "xcom" / "return.json").read_text())
    assert not _processes_under(workdir), "nginx or a server outlived the pod"
    print(f"canary {canary}: {result['outcome']}, breach to rollback {result['breach_to_rollback_s']} s, "
          f"proxy reloads {[round(c['applied_s'], 3) for c in result['weight_changes']]} s")
    return result, failure


def _processes_under(workdir: Path) -> list[str]:
    """Command lines of live processes that refer to the pod's folder (nginx's -p prefix)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(workdir) in cmdline:
                found.append(cmdline)
    return found


def _mlflow_run(run_id: str) -> Any:
    from mlflow import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    return client, client.get_run(run_id)


def test_healthy_canary_is_promoted_to_full_traffic(platform, models_dir, vllm_runtime, tmp_path: Path) -> None:
    result, failure = _run_canary(tmp_path, "better")
    assert failure is None, f"the canary pod failed: {failure}"
    assert (result["outcome"], result["final_weight"]) == ("promoted", 100), result["reasons"]
    assert [(s["step_index"], s["weight"], s["outcome"]) for s in result["steps"]] == [
        (0, 25, "promote_step"), (1, 50, "promote_step")]
    for step in result["steps"]:
        # Both sides really served through the proxy, without errors, in the same window.
        assert step["canary"]["requests"] >= 10 and step["stable"]["requests"] >= 10
        assert step["canary"]["errors"] == step["stable"]["errors"] == 0
        assert step["unattributed"] == 0
        assert step["canary"]["quality_mean"] >= 0.5
    assert [c["canary"] for c in result["weight_changes"]] == [25, 50, 100]
    assert result["breach_to_rollback_s"] is None

    client, run = _mlflow_run(result["mlflow_run_id"])
    assert run.data.tags["llmops.stage"] == "canary"
    assert run.data.tags["outcome"] == "promoted"
    assert run.data.tags["model_canary"] == "tiny-chat/better"
    assert run.data.tags["hardware_class"] == "cpu"
    assert run.data.metrics["canary/final_weight"] == 100
    assert run.data.metrics["canary/step_1/weight"] == 50
    assert run.data.metrics["canary/step_0/error_rate"] == 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "canary")}
    assert {"canary/verdicts.json", "canary/verdicts.md", "canary/requests.jsonl"} <= artifacts


def test_injected_breach_is_rolled_back_at_once(platform, models_dir, vllm_runtime, tmp_path: Path) -> None:
    # A config regression, not a mock: the canary's context is too short for any prompt.
    result, failure = _run_canary(tmp_path, "better", canary_extra_args=["--max-model-len", "16"])
    assert failure is not None and failure.exit_code == 4, "a rolled-back canary must fail its task with code 4"
    assert (result["outcome"], result["final_weight"]) == ("rolled_back", 0)
    [step] = result["steps"]
    assert (step["step_index"], step["weight"], step["outcome"], step["abort"]) == (0, 25, "fail", True)
    assert step["canary"]["error_rate"] == 1.0 and step["stable"]["errors"] == 0
    assert "HTTP 400" in step["canary"]["first_errors"][0]
    assert any(reason.startswith("error_rate:") for reason in result["reasons"])
    assert [c["canary"] for c in result["weight_changes"]] == [25, 0]
    assert 0 < result["breach_to_rollback_s"] < 5

    client, run = _mlflow_run(result["mlflow_run_id"])
    assert run.data.tags["outcome"] == "rolled_back"
    assert run.data.metrics["canary/final_weight"] == 0
    assert run.data.metrics["canary/breach_to_rollback_s"] == pytest.approx(result["breach_to_rollback_s"])
    assert run.data.metrics["canary/step_0/error_rate"] == 1.0
    local = client.download_artifacts(run.info.run_id, "canary/verdicts.json", str(tmp_path))
    verdicts = json.loads(Path(local).read_text())
    assert verdicts["history"][0]["abort"] is True
