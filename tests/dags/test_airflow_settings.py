"""airflow_settings.yaml declares what the DAGs and hardware classes use, with no secrets.

The Astro CLI reads the file with no ``${VAR}`` expansion and passes every value literally to
``airflow connections add`` / ``variables set`` / ``pools set`` (astro-cli settings/settings.go),
so the tests read it the same way: plain ``yaml.safe_load``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.config import settings
from llmops.core.hardware import load_all
from llmops.embedded.airflow_settings import AirflowSettingsError, AirflowSettingsFile
from llmops.embedded.platform import EmbeddedPlatform, Endpoints

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_FILE = AirflowSettingsFile.load(ROOT / "airflow_settings.yaml")
RAW = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())
CONNECTION_KEYS = {"conn_id", "conn_type", "conn_host", "conn_schema", "conn_login", "conn_password",
                   "conn_port", "conn_uri", "conn_extra"}


def test_one_pool_per_gpu_product_sized_like_the_hardware_classes() -> None:
    declared = {p.name: p.slots for p in SETTINGS_FILE.pools}
    needed = {hw.pool.name: hw.pool.slots for hw in load_all(settings.load().hardware_configs_dir).values()}
    assert declared == needed


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def test_every_value_is_literal_as_the_astro_cli_passes_it() -> None:
    for where, value in _strings(RAW, "file"):
        assert "${" not in value and "$(" not in value, f"{where} = {value!r}: the Astro CLI does not expand it"
        # The CLI wraps each value in '...' on a `bash -c` command line.
        assert "'" not in value, f"{where} = {value!r}: a single quote breaks the Astro CLI's command line"


def test_fields_have_the_types_the_astro_cli_decodes() -> None:
    assert set(RAW) == {"airflow"}
    assert set(RAW["airflow"]) <= {"connections", "variables", "pools"}
    ids = [c["conn_id"] for c in RAW["airflow"]["connections"]]
    assert len(ids) == len(set(ids)), "duplicate conn_id"
    for conn in RAW["airflow"]["connections"]:
        where = f"connection {conn.get('conn_id')}"
        assert set(conn) <= CONNECTION_KEYS, f"{where}: unknown keys {set(conn) - CONNECTION_KEYS}"
        assert isinstance(conn["conn_id"], str) and conn["conn_id"], where
        assert isinstance(conn["conn_type"], str) and conn["conn_type"], where
        for key in ("conn_host", "conn_schema", "conn_login", "conn_password", "conn_uri"):
            assert conn.get(key) is None or isinstance(conn[key], str), f"{where}: {key} must be a string"
        port = conn.get("conn_port")
        assert port is None or (isinstance(port, int) and not isinstance(port, bool)), f"{where}: conn_port"
        extra = conn.get("conn_extra")
        if isinstance(extra, str):
            assert isinstance(json.loads(extra), dict), f"{where}: conn_extra must be a JSON object"
        elif extra is not None:
            # Older CLIs keep only string values of a mapping; some lowercase its keys.
            assert isinstance(extra, dict), f"{where}: conn_extra must be a mapping or a JSON string"
            for key, value in extra.items():
                assert isinstance(key, str) and key == key.lower(), f"{where}: conn_extra key {key!r}"
                assert isinstance(value, str), f"{where}: conn_extra.{key} is not a string; use a JSON string"
    names = [v["variable_name"] for v in RAW["airflow"]["variables"]]
    assert len(names) == len(set(names)), "duplicate variable_name"
    for var in RAW["airflow"]["variables"]:
        assert set(var) == {"variable_name", "variable_value"}, var
        # The CLI skips a variable whose value is empty.
        assert isinstance(var["variable_value"], str) and var["variable_value"], var["variable_name"]
    pools = [p["pool_name"] for p in RAW["airflow"]["pools"]]
    assert len(pools) == len(set(pools)), "duplicate pool_name"
    for pool in RAW["airflow"]["pools"]:
        assert set(pool) <= {"pool_name", "pool_slot", "pool_description"}, pool
        assert isinstance(pool["pool_name"], str) and pool["pool_name"], pool
        # The CLI skips a pool whose pool_slot is 0.
        slot = pool["pool_slot"]
        assert isinstance(slot, int) and not isinstance(slot, bool) and slot > 0, pool["pool_name"]
        assert pool.get("pool_description") is None or isinstance(pool["pool_description"], str), pool


def _code_references() -> tuple[set[str], set[str]]:
    """Connection ids and variables the DAGs and plugins need (those read with a default are optional)."""
    files = {path: path.read_text() for path in [*ROOT.glob("dags/*.py"), *ROOT.glob("plugins/llmops/**/*.py")]}
    constants = {name: value for text in files.values()
                 for name, value in re.findall(r'^([A-Z][A-Z0-9_]*)\s*(?::\s*\w+\s*)?=\s*"([^"]+)"', text, re.M)}
    connections: set[str] = set()
    variables: set[str] = set()
    for path, text in files.items():
        connections |= set(re.findall(r'get_connection\(\s*"([\w-]+)"', text))
        connections |= set(re.findall(r'\bconn_id\s*=\s*"([\w-]+)"', text))
        connections |= {constants[c] for c in re.findall(r"get_connection\(\s*([A-Z][A-Z0-9_]*)\s*\)", text)}
        connections |= {v for c, v in constants.items() if c.endswith("CONN_ID") and c in text}
        if "KubernetesPodOperator" in text and "kubernetes_conn_id" not in text:
            connections.add("kubernetes_default")
        variables |= set(re.findall(r'Variable\.get\(\s*"(\w+)"\s*\)', text))
        for name in re.findall(r"Variable\.get\(\s*([A-Z][A-Z0-9_]*)\s*\)", text):
            assert name in constants, f"{path}: Variable.get({name}) names no string constant"
            variables.add(constants[name])
        for template in re.findall(r"\{\{(.*?)\}\}", text):
            connections |= set(re.findall(r"\bconn\.(\w+)", template))
            variables |= set(re.findall(r"\bvar\.(?:value|json)\.(\w+)", template)) - {"get"}
    return connections, variables


def test_every_connection_and_variable_the_code_uses_is_declared() -> None:
    connections, variables = _code_references()
    assert {"llmops_s3", "llmops_mlflow", "kubernetes_default"} <= connections, "the scan missed references"
    assert {"llmops_bucket_models", "llmops_bucket_drops"} <= variables, "the scan missed references"
    declared = {c["conn_id"] for c in RAW["airflow"]["connections"]}
    assert connections <= declared, f"undeclared connections: {connections - declared}"
    undeclared = variables - set(SETTINGS_FILE.variables)
    assert not undeclared, f"undeclared variables: {undeclared}"


def test_the_file_holds_the_embedded_defaults_values(tmp_path: Path) -> None:
    # `astro dev start` applies the file as is; the embedded platform on its default ports
    # must arrive at the same connections.
    env = EmbeddedPlatform(tmp_path, Endpoints()).airflow_env()
    for key, value in SETTINGS_FILE.env().items():
        decode = json.loads if key.startswith("AIRFLOW_CONN_") else str
        assert decode(env[key]) == decode(value), key


def test_embedded_platform_points_the_connections_at_its_endpoints(tmp_path: Path) -> None:
    from airflow.models.connection import Connection

    platform = EmbeddedPlatform(tmp_path, Endpoints(s3_port=1111, mlflow_port=2222, airflow_port=3333))
    env = platform.airflow_env()
    mlflow = Connection.from_json(env["AIRFLOW_CONN_LLMOPS_MLFLOW"], conn_id="llmops_mlflow")
    assert mlflow.host == "http://127.0.0.1:2222"
    s3 = Connection.from_json(env["AIRFLOW_CONN_LLMOPS_S3"], conn_id="llmops_s3")
    assert s3.extra_dejson == {"endpoint_url": "http://127.0.0.1:1111", "region_name": "us-east-1"}
    k8s = Connection.from_json(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"], conn_id="kubernetes_default")
    assert {k: v for k, v in k8s.extra_dejson.items() if not k.startswith("xcom_sidecar_")} == {
        "in_cluster": True, "namespace": "llmops"}
    assert env["AIRFLOW_VAR_LLMOPS_BUCKET_DROPS"] == "llmops-drops"


def test_kubernetes_connection_pins_and_limits_the_xcom_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider takes the XCom sidecar's image and resources from these extras (the
    resources as a JSON string it decodes); the launcher refuses a pod without a pinned image
    and a memory limit, so the file gives both, read back as the provider reads them."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    from llmops.config.images import is_pinned_by_digest
    from llmops.config.kubernetes import KUBERNETES_CONN_ID

    name = f"AIRFLOW_CONN_{KUBERNETES_CONN_ID.upper()}"
    monkeypatch.setenv(name, SETTINGS_FILE.env()[name])  # as the embedded platform passes it
    hook = KubernetesHook(conn_id=KUBERNETES_CONN_ID)
    image = hook.get_xcom_sidecar_container_image()
    assert is_pinned_by_digest(image), f"{KUBERNETES_CONN_ID}: xcom_sidecar_container_image {image!r}"
    resources = hook.get_xcom_sidecar_container_resources()
    assert resources["limits"]["memory"] and resources["requests"]["memory"], resources
    assert resources["requests"]["cpu"], resources


def test_a_placeholder_is_refused_on_load(tmp_path: Path) -> None:
    path = tmp_path / "airflow_settings.yaml"
    path.write_text("airflow:\n  connections:\n    - conn_id: x\n      conn_type: http\n"
                    "      conn_host: ${X_HOST}\n")
    with pytest.raises(AirflowSettingsError, match=r"connection x: conn_host is '\$\{X_HOST\}'.*does not expand"):
        AirflowSettingsFile.load(path)


def test_an_override_must_name_a_declared_connection_and_field() -> None:
    with pytest.raises(AirflowSettingsError, match=r"undeclared connections \['llmops_s4'\]"):
        SETTINGS_FILE.env({"llmops_s4": {"host": "x"}})
    with pytest.raises(AirflowSettingsError, match=r"connection llmops_mlflow has unknown fields \['hots'\]"):
        SETTINGS_FILE.env({"llmops_mlflow": {"hots": "x"}})


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
