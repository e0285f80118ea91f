"""The embedded platform's services, started for real once per test session on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops.embedded import s3state
from llmops.embedded.platform import EmbeddedPlatform, Endpoints
from llmops.embedded.services import free_port
from llmops.io import s3 as s3io

ROOT = Path(__file__).resolve().parents[2]


def _require(path: Path, what: str, make_target: str) -> None:
    if not path.exists():
        pytest.fail(f"{what} missing at {path}: run `make {make_target}` (the README's test command does)")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The model maker's checkpoints (made by `make models` before the tests)."""
    path = Path(os.environ["LLMOPS_MODELS_DIR"]) / "tiny-chat"
    for variant in ("good", "better", "degraded"):
        _require(path / variant / "config.json", f"checkpoint {variant!r}", "models")
    return path


@pytest.fixture(scope="session")
def vllm_runtime() -> Path:
    """The vLLM virtual environment (made by `make vllm-env`)."""
    venv = Path(os.environ.get("LLMOPS_VLLM_VENV", ROOT / ".venv-vllm"))
    _require(venv / "bin" / "vllm", "the vLLM environment", "vllm-env")
    return venv


@pytest.fixture(scope="session")
def platform(session_dir: Path) -> Iterator[EmbeddedPlatform]:
    """A real S3 endpoint (moto) and MLflow server (SQLite + S3 artifacts), with the
    Airflow connections and variables pointing at them in this process's environment."""
    platform = EmbeddedPlatform(
        session_dir / "platform", Endpoints(s3_port=free_port(), mlflow_port=free_port(), airflow_port=free_port())
    )
    env = platform.airflow_env()
    saved = dict(os.environ)
    # Keep the session's Airflow home and DB; take the platform's connections, variables, endpoints.
    for key in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "PYTHONPATH"):
        env.pop(key, None)
    os.environ.update(env)
    platform.write_local_secrets()
    services = platform.services(with_airflow=False)
    try:
        for service in services:
            service.start()
        s3state.ensure_buckets(s3io.client(endpoint_url=platform.endpoints.s3_url), platform.settings_file.buckets())
        yield platform
    finally:
        for service in reversed(services):
            service.stop()
        os.environ.clear()
        os.environ.update(saved)


def run_job_cli(name: str, *args: str, xcom: Path) -> dict:
    """Run a pod job's CLI (``python -m llmops.jobs.<name>``) as the launchers do; return its result."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "LLMOPS_XCOM_DIR": str(xcom)}
    done = subprocess.run([sys.executable, "-m", f"llmops.jobs.{name}", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((xcom / "return.json").read_text())


@pytest.fixture
def publish(tmp_path: Path):
    """Publish a model folder as a weight drop on the session's S3 endpoint; returns the drop URI."""
    from llmops.embedded.scenario import publish as publish_drop

    def _publish(folder: Path, model: str, revision: str, image: str | None = None) -> str:
        # Pinned by default to the platform's own vLLM runtime: a drop's pin is what serves it.
        from llmops.config import settings as settings_mod

        return publish_drop(folder, model, revision, image or settings_mod.load().vllm_image, tmp_path)["drop_uri"]

    return _publish


class BackgroundLoop:
    """``_run`` in a daemon thread for the duration of a ``with`` block (``_stop`` ends it), e.g.
    what a person or the scheduler does while ``dag.test()`` runs in the test's own thread."""

    def __init__(self, name: str) -> None:
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # returns the subclass instance
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Approver(BackgroundLoop):
    """Answers Human-in-the-loop tasks the way a person does in the UI: through Airflow's public
    REST API (the api-server app, in process, on the test session's metadata DB), from a thread,
    while ``dag.test()`` waits with the task parked in ``awaiting_input``."""

    def __init__(self, dag_id: str, task_id: str, option: str = "Approve", timeout_s: float = 1800.0) -> None:
        super().__init__(name=f"approver-{task_id}")
        self.dag_id, self.task_id, self.option, self.timeout_s = dag_id, task_id, option, timeout_s
        self.answered: list[dict] = []
        self.seen_waiting: list[str] = []

    def _run(self) -> None:
        import time

        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        client = TestClient(create_app(apps="core"))
        deadline = time.monotonic() + self.timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            listing = client.get(f"/api/v2/dags/{self.dag_id}/dagRuns/~/hitlDetails")
            listing.raise_for_status()
            for detail in listing.json()["hitl_details"]:
                ti = detail["task_instance"]
                if detail["response_received"] or ti["task_id"] != self.task_id:
                    continue
                self.seen_waiting.append(ti["state"])
                answer = client.patch(
                    f"/api/v2/dags/{self.dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/{self.task_id}/"
                    f"{ti['map_index']}/hitlDetails", json={"chosen_options": [self.option], "params_input": {}})
                answer.raise_for_status()
                self.answered.append(answer.json())
            time.sleep(2)


@pytest.fixture
def approver() -> type[Approver]:
    """The :class:`Approver` class: ``with approver(dag_id, task_id): dag.test(...)``."""
    return Approver
