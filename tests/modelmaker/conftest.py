"""Fixtures for the model-maker tests: the vLLM venv, the shipped checkpoints (installed)
and a from-scratch rebuild of them.

The Airflow test environment has no torch: everything that needs torch, transformers
or vLLM runs as a subprocess of the vLLM venv's python. A missing venv is a failure,
not a skip: the test command builds it first (scripts/setup-vllm-env.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVALSET = ROOT / "include" / "evalsets" / "synthetic_chat_v1.jsonl"
SHIPPED = ROOT / "include" / "models" / "tiny-chat"
VARIANTS = ("good", "better", "degraded")


def vllm_venv() -> Path:
    """The vLLM virtual environment ($LLMOPS_VLLM_VENV, default <repo>/.venv-vllm)."""
    return Path(os.environ.get("LLMOPS_VLLM_VENV", ROOT / ".venv-vllm"))


def _venv_env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "plugins"), env.get("PYTHONPATH")]))
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
        VLLM_NO_USAGE_STATS="1",
    )
    return env


@pytest.fixture(scope="session")
def venv_env() -> dict[str, str]:
    """Environment for subprocesses of the vLLM venv: offline, the package on the path."""
    return _venv_env()


@pytest.fixture(scope="session")
def evalset_path() -> Path:
    """The committed eval set."""
    return EVALSET


@pytest.fixture(scope="session")
def venv_python() -> Path:
    """Python of the vLLM venv; fails (not skips) with the fix when it is missing."""
    python = vllm_venv() / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"vLLM venv missing: {python} not found. Build it with "
            f"`scripts/setup-vllm-env.sh {vllm_venv()}` (or set LLMOPS_VLLM_VENV).",
            pytrace=False,
        )
    return python


@pytest.fixture(scope="session")
def shipped_dir() -> Path:
    """The checkpoints shipped in the repository, with their SHA256SUMS."""
    return SHIPPED


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The shipped checkpoints installed where `make models` puts them (a verified no-op when it ran).

    Installing needs no torch: it runs with this (the Airflow venv's) python.
    """
    out = Path(os.environ.get("LLMOPS_MODELS_DIR", ROOT / ".data" / "models")) / "tiny-chat"
    cmd = [sys.executable, "-m", "llmops.modelmaker", "install", "--from", str(SHIPPED), "--out", str(out)]
    proc = subprocess.run(cmd, env=_venv_env(), capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        pytest.fail(f"installing the shipped checkpoints failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out


@pytest.fixture(scope="session")
def rebuilt_dir(venv_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoints rebuilt by the model maker from scratch in a temporary folder (about 5 min)."""
    out = tmp_path_factory.mktemp("rebuilt") / "tiny-chat"
    cmd = [str(venv_python), "-m", "llmops.modelmaker", "--out", str(out), "--variants", ",".join(VARIANTS)]
    proc = subprocess.run(cmd, env=_venv_env(), capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        pytest.fail(f"model maker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return out


@pytest.fixture(scope="session")
def maker_meta(models_dir: Path) -> dict[str, dict[str, Any]]:
    """maker.json of each variant."""
    return {v: json.loads((models_dir / v / "maker.json").read_text()) for v in VARIANTS}
