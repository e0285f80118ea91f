"""airflow_settings.yaml declares what the DAGs and hardware classes use, with no secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmops import settings
from llmops.embedded.airflow_settings import AirflowSettingsError, AirflowSettingsFile
from llmops.embedded.platform import EmbeddedPlatform, Endpoints
from llmops.hardware import load_all

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_FILE = AirflowSettingsFile.load(ROOT / "airflow_settings.yaml")


def test_one_pool_per_gpu_product_sized_like_the_hardware_classes() -> None:
    declared = {p.name: p.slots for p in SETTINGS_FILE.pools}
    needed = {hw.pool.name: hw.pool.slots for hw in load_all(settings.load().hardware_configs_dir).values()}
    assert declared == needed


def test_connections_used_in_templates_are_declared() -> None:
    declared = {c["conn_id"] for c in SETTINGS_FILE.connections}
    used = set()
    for path in [*ROOT.glob("dags/*.py"), *ROOT.glob("plugins/llmops/**/*.py")]:
        used |= set(re.findall(r"conn\.([a-z_]+)\.", path.read_text()))
        used |= set(re.findall(r"get_connection\(\"([a-z_]+)\"\)", path.read_text()))
    assert used, "expected the DAGs to use connections"
    assert used <= declared, f"undeclared connections: {used - declared}"


def test_embedded_platform_fills_every_placeholder(tmp_path: Path) -> None:
    platform = EmbeddedPlatform(tmp_path, Endpoints(s3_port=1111, mlflow_port=2222, airflow_port=3333))
    env = platform.airflow_env()
    mlflow = json.loads(env["AIRFLOW_CONN_LLMOPS_MLFLOW"])
    assert mlflow["host"] == "http://127.0.0.1:2222"
    s3 = json.loads(env["AIRFLOW_CONN_LLMOPS_S3"])
    assert s3["extra"]["endpoint_url"] == "http://127.0.0.1:1111"
    assert env["AIRFLOW_VAR_LLMOPS_BUCKET_DROPS"] == "llmops-drops"


def test_a_missing_placeholder_value_is_named() -> None:
    with pytest.raises(AirflowSettingsError, match=r"connection llmops_mlflow uses \$\{LLMOPS_MLFLOW_TRACKING_URI\}"):
        SETTINGS_FILE.env({"LLMOPS_S3_ENDPOINT_URL": "x", "LLMOPS_AWS_REGION": "y"})


def test_no_credentials_in_the_file() -> None:
    text = (ROOT / "airflow_settings.yaml").read_text()
    for conn in SETTINGS_FILE.connections:
        assert not conn.get("conn_password"), f"{conn['conn_id']} has a password in the repo"
        assert not conn.get("conn_login"), f"{conn['conn_id']} has a login in the repo"
    assert "aws_secret_access_key" not in text.lower()


def test_airflow_plugin_loader_does_not_import_the_library() -> None:
    # Airflow imports every .py under plugins/ in each component unless .airflowignore'd;
    # llmops/modelmaker/__main__.py would then run as "__main__".
    from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory

    plugins, errors = _load_plugins_from_plugin_directory(str(ROOT / "plugins"))
    assert plugins == [] and errors == {}
