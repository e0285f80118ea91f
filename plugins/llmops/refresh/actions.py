"""What ``model_refresh`` and ``model_rollback`` change once a verdict is in: registry aliases,
``deployments/<model>/current.json`` and its history, the serving route, and the model's lease.
Runs inside Airflow tasks (light I/O only).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from llmops.config.settings import Settings
from llmops.io import registry


def promote(settings: Settings, *, model: str, version: str, run_id: str, tracking_uri: str,
            models_bucket: str) -> dict[str, Any]:
    """Move ``champion``/``previous``, and write ``deployments/<model>/current.json`` with its history."""
    reg = registry.ModelRegistry(tracking_uri)
    moved = reg.promote(model, version)
    record = _deployment_record(reg, model, moved["champion"], run_id, action="promote")
    reg.tag(model, version, {registry.STATUS_TAG: "champion", "llmops.promoted_by": run_id})
    _write_current(models_bucket, model, record)
    return {**moved, "deployment": record, "serving": _serve(settings, record, reason="promote")}


def rollback(settings: Settings, *, model: str, run_id: str, tracking_uri: str,
             models_bucket: str) -> dict[str, Any]:
    """``champion`` back to ``previous`` in one step, recorded in ``current.json``'s history.

    Idempotent per run: the first attempt writes its decision (``deployments/<model>/rollbacks/
    <run id>.json``, a conditional create) before moving any alias, and every retry converges on
    that decision, so a retry never rolls back twice, even after dying between two alias moves.
    """
    from llmops.io import s3 as s3io
    from llmops.refresh.deploy_history import rollback_plan

    reg = registry.ModelRegistry(tracking_uri)
    s3 = s3io.client_from_connection()
    intent_key = f"deployments/{model}/rollbacks/{_safe_key(run_id)}.json"
    intent = s3io.read_json_if_exists(s3, models_bucket, intent_key)
    if intent is None:
        champion = reg.by_alias(model, registry.CHAMPION)
        previous = reg.by_alias(model, registry.PREVIOUS)
        try:
            plan = rollback_plan(None, champion.version if champion else None,
                                 previous.version if previous else None, run_id)
        except LookupError as exc:
            raise registry.RegistryError(f"model {model!r}: {exc}") from exc
        intent = {"airflow_run_id": run_id, "model": model, "champion": plan["champion"],
                  "previous": plan["previous"]}
        if not s3io.create_json(s3, models_bucket, intent_key, intent):
            intent = s3io.read_json(s3, models_bucket, intent_key)  # a concurrent attempt decided first
    plan = rollback_plan(intent, None, None, run_id)
    reg.set_alias(model, registry.CHAMPION, plan["champion"])
    reg.set_alias(model, registry.PREVIOUS, plan["previous"])
    reg.tag(model, plan["rolled_back"], {registry.STATUS_TAG: "rolled_back", "llmops.rolled_back_by": run_id})
    moved = {"champion": plan["champion"], "rolled_back": plan["rolled_back"]}
    record = _deployment_record(reg, model, moved["champion"], run_id, action="rollback")
    _write_current(models_bucket, model, record)
    return {**moved, "deployment": record, "serving": _serve(settings, record, reason="rollback")}


def _safe_key(run_id: str) -> str:
    """An Airflow run id as one S3 key segment (run ids may hold ``:`` and ``+``)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id)


def _serve(settings: Settings, record: dict[str, Any], reason: str) -> dict[str, Any]:
    """The serving route follows the registry: ``<model>-stable`` rolled to the record's version."""
    from llmops.serving.deployments import serve_champion

    return serve_champion(settings, record["model"], version=record["version"], weights_uri=record["weights_uri"],
                          weight_digest=record["pins"].get("weight_digest", ""), reason=reason)


def claim_model(model: str, run_id: str, holder_alive: Any) -> tuple[bool, str]:
    """Take ``model``'s refresh lease in the models bucket (see :mod:`llmops.refresh.lease`)."""
    from llmops.refresh import lease

    s3, bucket = _models_bucket()
    return lease.acquire(s3, bucket, model, run_id, holder_alive)


def release_model(model: str, run_id: str) -> bool:
    """Give ``model``'s refresh lease back if this run holds it."""
    from llmops.refresh import lease

    s3, bucket = _models_bucket()
    return lease.release(s3, bucket, model, run_id)


def release_drop_claim(drop_uri: str, run_id: str, reason: str) -> bool:
    """Release the weight-drop watcher's claim held by this run (see :func:`drop_watch.release_claim`),
    so that the drop, once republished, starts a new refresh; False when there is none to release
    (a run started by hand, or a claim already released by an earlier try)."""
    from llmops.io import s3 as s3io
    from llmops.refresh.drop_watch import release_claim

    bucket, _ = s3io.parse_s3_uri(drop_uri)
    return release_claim(s3io.client_from_connection(), bucket, run_id, reason)


def _models_bucket() -> tuple[Any, str]:
    """An S3 client from the ``llmops_s3`` connection and the models bucket (inside a task)."""
    from airflow.sdk import Variable

    from llmops.io import s3 as s3io

    return s3io.client_from_connection(), Variable.get("llmops_bucket_models")


def _deployment_record(reg: registry.ModelRegistry, model: str, version: str, run_id: str,
                       action: str) -> dict[str, Any]:
    from datetime import datetime

    champion = reg.get(model, version)
    pins = {k.removeprefix(registry.PIN_PREFIX): v for k, v in champion.tags.items()
            if k.startswith(registry.PIN_PREFIX)}
    return {"model": model, "version": version, "weights_uri": champion.source, "pins": pins, "action": action,
            "airflow_run_id": run_id, "at": datetime.now(UTC).isoformat()}


def _write_current(bucket: str, model: str, record: dict[str, Any]) -> None:
    """``current.json`` = the serving deployment plus every earlier one, newest first (kept forever).

    A replay of the same run's action rewrites the same document and the same history object
    (see :mod:`llmops.refresh.deploy_history`): a retried promote or rollback adds nothing.
    """
    from llmops.io import s3 as s3io
    from llmops.refresh.deploy_history import history_key, next_current

    s3 = s3io.client_from_connection()
    key = f"deployments/{model}/current.json"
    current = next_current(s3io.read_json_if_exists(s3, bucket, key), record)
    s3io.write_json(s3, bucket, key, current)
    s3io.write_json(s3, bucket, history_key(model, current),
                    {k: v for k, v in current.items() if k != "history"})
