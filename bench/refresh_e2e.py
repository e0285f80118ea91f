"""End-to-end model refresh on the embedded platform: wall time and breach-to-rollback time.

Starts its own S3 endpoint and MLflow server on free ports, then runs ``model_refresh``
with Airflow's own runner (``dag.test()``) for a first drop (qualify + promote) and a
second drop that is canaried (qualify both, canary, promote), and a third whose canary
breaks every request (rolled back). Printed per run:

* wall time, and wall time minus the configured canary observation windows;
* the baseline measured in the same run: the sum of the tasks' own durations, and the
  ratio wall / tasks (what orchestration adds on top of the work itself);
* for the breach: breach-to-rollback seconds as measured by the canary controller.

    PYTHONPATH=plugins .venv/bin/python bench/refresh_e2e.py        # about 10 minutes on 2 cores
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW_S = 10
STEPS = [25, 50]


def main() -> int:
    session = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    os.environ.update({
        "AIRFLOW_HOME": str(session / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "LLMOPS_MODELS_DIR": os.environ.get("LLMOPS_MODELS_DIR", str(ROOT / ".data" / "models")),
        "PYTHONPATH": str(ROOT / "plugins"),
    })
    from llmops.embedded import s3state
    from llmops.embedded.platform import EmbeddedPlatform, Endpoints
    from llmops.embedded.services import free_port
    from llmops.io import s3 as s3io

    platform = EmbeddedPlatform(session / "platform", Endpoints(free_port(), free_port(), free_port()))
    env = platform.airflow_env()
    for key in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "PYTHONPATH"):
        env.pop(key, None)
    os.environ.update(env)
    platform.write_local_secrets()
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)
    services = platform.services(with_airflow=False)
    try:
        for service in services:
            service.start()
        s3state.ensure_buckets(s3io.client(endpoint_url=platform.endpoints.s3_url), platform.settings_file.buckets())
        return _run(session)
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(session, ignore_errors=True)


def _run(session: Path) -> int:
    from airflow.dag_processing.dagbag import DagBag

    from llmops.embedded.scenario import publish

    models = Path(os.environ["LLMOPS_MODELS_DIR"]) / "tiny-chat"
    repackaged = session / "repackaged"
    shutil.copytree(models / "better", repackaged)
    (repackaged / "README.md").write_text("repackaged\n")
    dag = DagBag(dag_folder=str(ROOT / "dags" / "model_refresh.py")).dags["model_refresh"]
    model = f"bench-{uuid.uuid4().hex[:6]}"
    cases = [("first drop (qualify, promote)", models / "good", {}, 0),
             ("better drop (qualify x2, canary, promote)", models / "better", {}, WINDOW_S * len(STEPS)),
             ("canary breach (rolled back)", repackaged,
              {"canary_vllm_args": ["--max-model-len", "16"], "canary_failure_limit": 1}, WINDOW_S)]
    print(f"{'run':<44} {'state':<8} {'wall s':>7} {'- windows':>10} {'tasks s':>8} {'wall/tasks':>10}")
    for i, (label, folder, extra, windows) in enumerate(cases, start=1):
        drop = publish(folder, model, f"r{i}", os.environ["LLMOPS_VLLM_IMAGE"], session)
        conf = {"model": model, "drop_uri": drop["drop_uri"], "hardware_classes": ["cpu"],
                "canary_steps": STEPS, "canary_window_s": WINDOW_S, **extra}
        started = time.monotonic()
        run = dag.test(run_conf=conf)
        wall = time.monotonic() - started
        tis = run.get_task_instances()
        task_s = sum((ti.end_date - ti.start_date).total_seconds() for ti in tis if ti.start_date and ti.end_date)
        print(f"{label:<44} {run.state:<8} {wall:>7.1f} {wall - windows:>10.1f} {task_s:>8.1f} "
              f"{wall / task_s if task_s else float('nan'):>10.2f}")
        if "canary_vllm_args" in extra:
            from llmops.io.registry import ModelRegistry

            tags = ModelRegistry(os.environ["MLFLOW_TRACKING_URI"]).get(model, str(i)).tags
            print(f"  breach-to-rollback: {float(tags['llmops.breach_to_rollback_s']):.3f} s "
                  f"(end of the breaching window -> proxy confirmed 0% canary)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
