"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.config import settings as settings_mod

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kube_settings(monkeypatch: pytest.MonkeyPatch) -> settings_mod.Settings:
    """Settings as production has them for the kubernetes launcher: digest-pinned images and the
    project's Kubernetes connection (its XCom sidecar pinned by digest and memory-limited)."""
    from test_launcher_redaction import JOBS_IMAGE, VLLM_IMAGE

    from llmops.embedded.airflow_settings import AirflowSettingsFile

    monkeypatch.setenv("LLMOPS_VLLM_IMAGE", VLLM_IMAGE)
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    name = "AIRFLOW_CONN_KUBERNETES_DEFAULT"
    monkeypatch.setenv(name, AirflowSettingsFile.load(ROOT / "airflow_settings.yaml").env()[name])
    return settings_mod.load()
