"""Read ``airflow_settings.yaml`` (Astro CLI format) into environment variables and pools.

The file holds literal values, read as the Astro CLI reads it (``astro dev start`` passes
each value unexpanded to ``airflow connections add`` / ``variables set`` / ``pools set``):
the embedded default's. Airflow resolves a connection from ``AIRFLOW_CONN_<ID>`` (JSON) or a
secrets backend before its metadata DB, and a variable from ``AIRFLOW_VAR_<NAME>`` likewise,
so other environments override the file without editing it. The embedded platform uses the
same mechanism: :meth:`AirflowSettingsFile.env` turns the file into those variables, with
overrides for what is only known at start (its ports); it needs no ``airflow connections
add`` step and the DB holds no credentials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The connection fields of the Astro CLI's format, as the keys of Airflow's JSON form.
CONNECTION_FIELDS = ("host", "schema", "login", "password", "port")


class AirflowSettingsError(ValueError):
    """The settings file is malformed or an override does not fit it; the message names which."""


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
            _check_literal(conn, path, f"connection {conn['conn_id']}")
            _extra(conn, path)
        variables = {}
        for i, var in enumerate(data.get("variables") or []):
            if "variable_name" not in var:
                raise AirflowSettingsError(f"{path}: airflow.variables[{i}] needs variable_name")
            _check_literal(var, path, f"variable {var['variable_name']}")
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

    def env(self, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` (Airflow's JSON form) and ``AIRFLOW_VAR_*`` for the file's values.

        ``overrides`` replaces fields of declared connections, e.g.
        ``{"llmops_mlflow": {"host": "http://127.0.0.1:5001"}}``; an ``"extra"`` mapping is
        merged into the file's extra. An override of a connection the file does not declare,
        or of a field other than ``host``, ``schema``, ``login``, ``password``, ``port`` and
        ``extra``, is an error, so a renamed connection is never silently left at its default.
        """
        overrides = dict(overrides or {})
        env: dict[str, str] = {}
        for conn in self.connections:
            conn_id = conn["conn_id"]
            override = dict(overrides.pop(conn_id, {}))
            unknown = set(override) - {*CONNECTION_FIELDS, "extra"}
            if unknown:
                raise AirflowSettingsError(f"{self.path}: override of connection {conn_id} has unknown "
                                           f"fields {sorted(unknown)}")
            payload: dict[str, Any] = {"conn_type": conn["conn_type"]}
            for field in CONNECTION_FIELDS:
                value = override.get(field, conn.get(f"conn_{field}"))
                if value not in (None, ""):
                    payload[field] = value
            extra = {**_extra(conn, self.path), **override.get("extra", {})}
            if extra:
                payload["extra"] = extra
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(payload)
        if overrides:
            raise AirflowSettingsError(f"{self.path}: overrides name undeclared connections {sorted(overrides)}")
        for name, value in self.variables.items():
            env[f"AIRFLOW_VAR_{name.upper()}"] = value
        return env


def _extra(conn: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """``conn_extra`` as a dict: the Astro CLI takes a mapping or a JSON object string."""
    extra = conn.get("conn_extra")
    if extra in (None, ""):
        return {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise AirflowSettingsError(f"{path}: connection {conn['conn_id']}: conn_extra is not "
                                       f"valid JSON: {exc}") from exc
    if not isinstance(extra, dict):
        raise AirflowSettingsError(f"{path}: connection {conn['conn_id']}: conn_extra must be a mapping "
                                   "or a JSON object string")
    return extra


def _check_literal(entry: Mapping[str, Any], path: Path, where: str) -> None:
    """The Astro CLI expands nothing: a ``${VAR}`` or ``$(cmd)`` would reach Airflow verbatim."""
    for key, value in entry.items():
        if isinstance(value, Mapping):
            _check_literal(value, path, f"{where}: {key}")
        elif isinstance(value, str) and ("${" in value or "$(" in value):
            raise AirflowSettingsError(
                f"{path}: {where}: {key} is {value!r}; the Astro CLI does not expand it. Put the "
                f"embedded default's value here and set other environments' through "
                f"AIRFLOW_CONN_* / AIRFLOW_VAR_* or a secrets backend")
