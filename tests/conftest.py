"""Test-session set-up: an isolated Airflow home and metadata DB, before Airflow is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="llmops-tests-"))

# Airflow reads its configuration at import: set it before any test imports it.
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
# The in-process API app that answers Human-in-the-loop tasks in tests treats its caller as admin.
os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
os.environ.setdefault("LLMOPS_LAUNCHER", "local")
os.environ["LLMOPS_DATA_DIR"] = str(_SESSION_DIR / "data")
# The model maker (`make models`) writes the checkpoints here; tests read them.
os.environ.setdefault("LLMOPS_MODELS_DIR", str(ROOT / ".data" / "models"))
# The runtime allowlist of the tests: the project's own (include/runtimes.yaml, the embedded
# runtime) plus the made-up vLLM images test drops are pinned to. Tests of refusal pin others.
TEST_RUNTIME_IMAGES = tuple("docker.io/vllm/vllm-openai@sha256:" + hex_ for hex_ in
                            ("a" * 64, "b" * 64, "c" * 64, "fa" * 32, "5e" * 32, "c3" * 32))
_RUNTIMES_FILE = _SESSION_DIR / "runtimes.yaml"
_RUNTIMES_FILE.write_text((ROOT / "include" / "runtimes.yaml").read_text() + "".join(
    f"  - image: {image}\n    vllm_version: \"0.32.0\"\n    accelerator: cuda\n    cuda: \"12.8\"\n"
    f"    driver: \"570.133.20\"\n    notes: a made-up test image\n" for image in TEST_RUNTIME_IMAGES))
os.environ["LLMOPS_RUNTIMES_FILE"] = str(_RUNTIMES_FILE)
# Pods started by the local launcher import the package from plugins/.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "plugins"), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB for ``dag.test()`` runs (about 6 s, once a session)."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def session_dir() -> Path:
    """A temporary folder shared by the whole test session."""
    return _SESSION_DIR
