"""A minimal client of Airflow 3's REST API (``/api/v2``): trigger a DAG and follow its run."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


class AirflowApiError(RuntimeError):
    """The API answered with an error; the message carries the status and body."""


class AirflowApi:
    """Token-authenticated calls to one Airflow API server."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = self._get_token(username, password)

    def _get_token(self, username: str, password: str) -> str:
        body = self._request("POST", "/auth/token", {"username": username, "password": password}, auth=False)
        return body["access_token"]

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None,
                 auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AirflowApiError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from exc
        return json.loads(raw) if raw else None

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180) -> None:
        """Wait until the dag-processor has parsed ``dag_id`` (and it has no import error)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self._request("GET", f"/api/v2/dags/{dag_id}")
                return
            except AirflowApiError as exc:
                if "HTTP 404" not in str(exc):
                    raise
            time.sleep(2)
        errors = self._request("GET", "/api/v2/importErrors")
        raise AirflowApiError(f"DAG {dag_id} not parsed after {timeout_s:.0f}s; import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Start a run now; return its run id."""
        body = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return body["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 1800, poll_s: float = 3) -> str:
        """Wait until the run ends; return its final state."""
        deadline = time.monotonic() + timeout_s
        state = "queued"
        while time.monotonic() < deadline:
            state = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(poll_s)
        raise AirflowApiError(f"run {run_id} of {dag_id} still {state} after {timeout_s:.0f}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        body = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
        return body.get("value")

    def upsert_pool(self, name: str, slots: int, description: str = "") -> None:
        """Create the pool, or set its slots if it exists."""
        # Deferred tasks hold no GPU (or CPU vLLM): they do not count against the pool.
        payload = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        try:
            self._request("POST", "/api/v2/pools", payload)
        except AirflowApiError as exc:
            if "HTTP 409" not in str(exc):
                raise
            self._request("PATCH", f"/api/v2/pools/{name}", payload)
