"""The main job on the embedded platform: three weight drops through the refresh pipeline.

Like a training pipeline would, it publishes checkpoints made by the model maker as
weight drops; the weight-drop watcher (sensor) starts ``model_refresh`` for each:

1. ``good``     -> the first model ever: qualified on absolute minimums, becomes champion;
2. ``better``   -> qualified against the champion, canaried, promoted;
3. ``degraded`` -> blocked at qualify, the failing category named.

It prints where to look in the Airflow UI and the MLflow UI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llmops.config import settings as settings_mod
from llmops.config.settings import PROJECT_ROOT
from llmops.embedded.airflow_api import AirflowApi
from llmops.embedded.platform import EmbeddedPlatform

WATCHER = "weight_drop_watcher"
REFRESH = "model_refresh"
MODEL = "tiny-chat"


@dataclass(frozen=True)
class Step:
    """One drop of the scenario and what should come of it."""

    checkpoint: str
    expect: str  # "success" or "failed"
    story: str


STEPS = (
    Step("good", "success", "first model ever: qualified on absolute minimums, promoted to champion"),
    Step("better", "success", "qualified against the champion, canaried, promoted"),
    Step("degraded", "failed", "blocked at qualify: the 'reverse' category regressed"),
)


def publish(checkpoint: Path, model: str, revision: str, vllm_image: str, work_dir: Path,
            extra_env: dict[str, str] | None = None) -> dict:
    """Publish ``checkpoint`` as a weight drop (what a training pipeline would do); return its result."""
    xcom_dir = work_dir / f"publish-{model}-{revision}"
    env = {**settings_mod.process_environ(), **(extra_env or {}), "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
           "LLMOPS_VLLM_IMAGE": vllm_image, "LLMOPS_XCOM_DIR": str(xcom_dir)}
    subprocess.run([sys.executable, "-m", "llmops.jobs.publish_drop", str(checkpoint), "--model", model,
                    "--revision", revision, "--exclude", "maker.json"], check=True, env=env, cwd=PROJECT_ROOT,
                   capture_output=True)
    return json.loads((xcom_dir / "return.json").read_text())


def wait_for_refresh_run(api: AirflowApi, weight_digest: str, timeout_s: float = 1800) -> str:
    """The run the watcher started for these weights (its id is derived from the digest)."""
    run_id = f"drop__{MODEL}__{weight_digest[:24]}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            api.wait_for_run(REFRESH, run_id, timeout_s=max(1.0, deadline - time.monotonic()))
            return run_id
        except Exception as exc:
            if "HTTP 404" not in str(exc):
                raise
            time.sleep(3)
    raise TimeoutError(f"no {REFRESH} run {run_id} within {timeout_s:.0f}s: is {WATCHER} unpaused and running?")


def run(platform: EmbeddedPlatform, api: AirflowApi, vllm_image: str, models_dir: Path) -> int:
    """Publish each drop, follow the run the sensor starts, report; 0 when every outcome is as expected."""
    for dag_id in (REFRESH, WATCHER):
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)
    stamp = time.strftime("%Y%m%dt%H%M%S")
    ok = True
    airflow, mlflow = platform.endpoints.airflow_url, platform.endpoints.mlflow_url
    for step in STEPS:
        drop = publish(models_dir / step.checkpoint, MODEL, f"{step.checkpoint}-{stamp}", vllm_image,
                       platform.data_dir / "scenario", platform.s3_env())
        print(f"\n== drop {drop['drop_uri']} ({step.checkpoint}): {step.story}", flush=True)
        run_id = wait_for_refresh_run(api, drop["weight_digest"])
        state = api._request("GET", f"/api/v2/dags/{REFRESH}/dagRuns/{run_id}")["state"]
        for ti in api.task_instances(REFRESH, run_id):
            print(f"   {ti['task_id']:<24} {ti['state']}")
        verdict = "as expected" if state == step.expect else f"UNEXPECTED (expected {step.expect})"
        ok &= state == step.expect
        print(f"   run {state} ({verdict}): {airflow}/dags/{REFRESH}/runs/{run_id}")
    print(f"\nMLflow: registered model {MODEL} (aliases champion/previous, version tags carry every pin): "
          f"{mlflow}/#/models/{MODEL}")
    print(f"MLflow: eval runs and gate verdicts (per-category deltas): {mlflow}/#/experiments "
          f"(experiment llmops-refresh)")
    return 0 if ok else 1
