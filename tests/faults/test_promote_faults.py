"""MLflow down during ``promote``: after the aliases moved, before the deployment record was written.

``llmops.refresh.actions.promote`` is what the ``promote`` task runs; here it runs in the test
process with the task's arguments, its MLflow endpoint behind a :class:`FaultProxy`. Any
exception but ``AirflowFailException`` is retried by Airflow; the retry is the same call again.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from llmops.config import settings as settings_mod
from llmops.io import s3 as s3io
from llmops.io.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from llmops.refresh import actions
from tests.faults.conftest import FAIL_FAST, FaultRecord
from tests.faults.netfault import FaultProxy
from tests.staged import stage_version

pytestmark = pytest.mark.integration

SET_ALIAS = b"POST /api/2.0/mlflow/registered-models/alias"


def _register(registry: ModelRegistry, s3: Any, model: str, digest: str, models_bucket: str) -> str:
    """A staged version as stage leaves it (pins as tags, deployment.json), without copying weights."""
    version = stage_version(registry, s3, models_bucket, model, digest, "img@sha256:" + "0" * 64)
    registry.set_alias(model, CHALLENGER, version)
    return version


def _records(s3: Any, bucket: str, model: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``current.json`` (None when absent) and every other JSON record under ``deployments/<model>/``."""
    current, others = None, []
    for obj in s3io.list_prefix(s3, bucket, f"deployments/{model}/"):
        body = s3io.read_json(s3, bucket, obj.key)
        if obj.key.endswith("/current.json"):
            current = body
        else:
            others.append(body)
    return current, others


def _promotes_by(records: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("airflow_run_id") == run_id and r.get("action") == "promote"]


def test_mlflow_down_during_promote(fault: FaultRecord, platform, s3: Any, buckets: tuple[str, str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow goes down during promote, right after the champion alias moved (the answer is lost)"""
    from airflow.sdk.exceptions import AirflowFailException

    _, models = buckets
    settings = settings_mod.load()
    model = f"fault-promote-{uuid.uuid4().hex[:8]}"
    registry = ModelRegistry(platform.endpoints.mlflow_url)
    first = _register(registry, s3, model, "a" * 64, models)
    actions.promote(settings, model=model, version=first, run_id="faults__first", models_bucket=models,
                    tracking_uri=platform.endpoints.mlflow_url)
    candidate = _register(registry, s3, model, "b" * 64, models)
    before, _ = _records(s3, models, model)
    run_id = f"faults__promote_{candidate}"

    with FaultProxy(platform.endpoints.mlflow_port) as proxy:
        # previous -> old champion is the first alias set, champion -> candidate the second.
        proxy.arm(SET_ALIAS, after=2, on_answer=True, mode="refuse")
        for name, value in FAIL_FAST.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(Exception) as failure:  # any error: what matters is its kind
            actions.promote(settings, model=model, version=candidate, run_id=run_id, models_bucket=models,
                            tracking_uri=proxy.url)
        assert proxy.outages, "the fault never fired: promote set no alias"
        fault.injected = proxy.outages[0].started
        assert not isinstance(failure.value, AirflowFailException), "an outage is not a verdict: it must retry"
        # Nothing half-done that a reader would take as done: no deployment record of this promote.
        current, others = _records(s3, models, model)
        assert current == before, "current.json changed although the promote did not complete"
        assert _promotes_by([current, *others], run_id) == []

        proxy.restore()
        fault.remove()
        for name in FAIL_FAST:
            monkeypatch.delenv(name)
        promoted = actions.promote(settings, model=model, version=candidate, run_id=run_id, models_bucket=models,
                                   tracking_uri=proxy.url)

    assert (promoted["champion"], promoted["previous"]) == (candidate, first)
    assert registry.by_alias(model, CHAMPION).version == candidate
    assert registry.by_alias(model, PREVIOUS).version == first
    assert registry.get(model, candidate).tags["llmops.status"] == "champion"
    current, others = _records(s3, models, model)
    assert (current["version"], current["airflow_run_id"]) == (candidate, run_id)
    assert [h["version"] for h in current["history"]] == [first], json.dumps(current["history"])
    assert _promotes_by(current["history"], run_id) == []
    assert len(_promotes_by(others, run_id)) == 1, "exactly one history record of this promote"
    # As after an uninterrupted promote: the champion no longer holds the challenger alias.
    assert registry.get(model, candidate).aliases == (CHAMPION,), "the retried promote left challenger on it"
    assert registry.get(model, first).aliases == (PREVIOUS,)
    fault.recover("attempt failed (not a verdict), no record written; retry: champion/previous right, "
                  "one history entry")
