"""Read ``airflow_settings.yaml`` (Astro CLI format) into environment variables and pools.

Airflow reads connections from ``AIRFLOW_CONN_<ID>`` (JSON) and variables from
``AIRFLOW_VAR_<NAME>`` before its metadata DB, so the embedded platform needs no
``airflow connections add`` step and the DB holds no credentials.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


class AirflowSettingsError(ValueError):
    """The settings file is malformed or a placeholder has no value; the message names which."""


@dataclass(frozen=True)
class Pool:
    """An Airflow pool."""

    name: str
    slots: int
    description: str = ""


@dataclass(frozen=True)
class AirflowSettingsFile:
    """The parsed file."""

    path: Path
    connections: list[dict[str, Any]]
    variables: dict[str, str]
    pools: list[Pool]

    @classmethod
    def load(cls, path: Path) -> AirflowSettingsFile:
        """Parse ``path``; structural errors name the file and the entry."""
        try:
            data = (yaml.safe_load(path.read_text()) or {}).get("airflow", {})
        except yaml.YAMLError as exc:
            raise AirflowSettingsError(f"{path}: not valid YAML: {exc}") from exc
        connections = data.get("connections") or []
        for i, conn in enumerate(connections):
            if not conn.get("conn_id") or not conn.get("conn_type"):
                raise AirflowSettingsError(f"{path}: airflow.connections[{i}] needs conn_id and conn_type")
        variables = {}
        for i, var in enumerate(data.get("variables") or []):
            if "variable_name" not in var:
                raise AirflowSettingsError(f"{path}: airflow.variables[{i}] needs variable_name")
            variables[var["variable_name"]] = str(var.get("variable_value", ""))
        pools = [Pool(p["pool_name"], int(p["pool_slot"]), p.get("pool_description", ""))
                 for p in data.get("pools") or []]
        return cls(path=path, connections=connections, variables=variables, pools=pools)

    def bucket(self, kind: str) -> str:
        """Bucket name from variable ``llmops_bucket_<kind>``."""
        try:
            return self.variables[f"llmops_bucket_{kind}"]
        except KeyError:
            raise AirflowSettingsError(f"{self.path}: variable llmops_bucket_{kind} is not declared") from None

    def buckets(self) -> list[str]:
        """Every bucket the pipelines use."""
        return [v for k, v in sorted(self.variables.items()) if k.startswith("llmops_bucket_")]

    def env(self, values: dict[str, str]) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` and ``AIRFLOW_VAR_*`` with placeholders filled from ``values``."""
        env: dict[str, str] = {}
        for conn in self.connections:
            where = f"connection {conn['conn_id']}"
            payload: dict[str, Any] = {"conn_type": conn["conn_type"]}
            for field in ("host", "schema", "login", "port"):
                if conn.get(f"conn_{field}") not in (None, ""):
                    payload[field] = _fill(conn[f"conn_{field}"], values, self.path, where)
            if conn.get("conn_extra"):
                payload["extra"] = {k: _fill(v, values, self.path, f"{where}.extra.{k}")
                                    for k, v in conn["conn_extra"].items()}
            env[f"AIRFLOW_CONN_{conn['conn_id'].upper()}"] = json.dumps(payload)
        for name, value in self.variables.items():
            env[f"AIRFLOW_VAR_{name.upper()}"] = _fill(value, values, self.path, f"variable {name}")
        return env


def _fill(value: Any, values: dict[str, str], path: Path, where: str) -> Any:
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise AirflowSettingsError(f"{path}: {where} uses ${{{name}}}, which has no value; set {name}")
        return values[name]

    return _PLACEHOLDER.sub(replace, value)
