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
    """Move ``champion``/``previous``, write ``deployments/<model>/current.json`` with its history, and
    serve the new champion (its serving inputs are checked before any alias moves)."""
    reg = registry.ModelRegistry(tracking_uri)
    inputs = _serving_inputs(settings, reg.get(model, version).source)
    moved = reg.promote(model, version)
    record = _deployment_record(reg, model, moved["champion"], run_id, action="promote")
    reg.tag(model, version, {registry.STATUS_TAG: "champion", "llmops.promoted_by": run_id})
    _write_current(models_bucket, model, record)
    return {**moved, "deployment": record, "serving": _serve(settings, reg, record, inputs, reason="promote")}


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
    # The previous version serves on what it pinned (runtime image included): checked before any alias moves.
    inputs = _serving_inputs(settings, reg.get(model, plan["champion"]).source)
    reg.set_alias(model, registry.CHAMPION, plan["champion"])
    reg.set_alias(model, registry.PREVIOUS, plan["previous"])
    reg.tag(model, plan["rolled_back"], {registry.STATUS_TAG: "rolled_back", "llmops.rolled_back_by": run_id})
    moved = {"champion": plan["champion"], "rolled_back": plan["rolled_back"]}
    record = _deployment_record(reg, model, moved["champion"], run_id, action="rollback")
    _write_current(models_bucket, model, record)
    return {**moved, "deployment": record, "serving": _serve(settings, reg, record, inputs, reason="rollback")}


def _safe_key(run_id: str) -> str:
    """An Airflow run id as one S3 key segment (run ids may hold ``:`` and ``+``)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id)


SERVING_DOCUMENT_TAG = "llmops.serving_document"
SERVING_SHA256_TAG = "llmops.serving_document_sha256"


def _serving_inputs(settings: Settings, weights_uri: str) -> tuple[Any, Any]:
    """The version's deployment manifest (``deployment.json`` beside its weights) and the default
    hardware class, refused (:class:`~llmops.serving.render.RenderError`, naming the file and the fix)
    when the class's config no longer hashes to the version's pin."""
    from llmops.core.hardware import config_path, load_hardware_class
    from llmops.io import s3 as s3io
    from llmops.serving.objects import read_deployment_manifest
    from llmops.serving.render import check_hardware_pin

    manifest = read_deployment_manifest(s3io.client_from_connection(), weights_uri)
    hw = load_hardware_class(settings.default_hardware_class, settings.hardware_configs_dir)
    check_hardware_pin(manifest, hw, config_path(hw.name, settings.hardware_configs_dir))
    return manifest, hw


def _serve(settings: Settings, reg: registry.ModelRegistry, record: dict[str, Any], inputs: tuple[Any, Any],
           reason: str) -> dict[str, Any]:
    """The serving objects follow the registry: ``<model>-stable`` applied for the record's version.

    Rendered from the version's own ``deployment.json`` (the runtime image it was qualified on, a
    rollback's included) and the default hardware class (``inputs``, from :func:`_serving_inputs`).
    The rendered document is stored beside ``deployment.json`` as ``serving-stable.json`` and
    named on the model version (tags ``llmops.serving_document`` and ``..._sha256``); the result
    carries its URI and SHA-256 instead of the text.
    """
    from llmops.io import s3 as s3io
    from llmops.serving.deployments import serve_champion
    from llmops.serving.objects import write_serving_document

    manifest, hw = inputs
    served = serve_champion(settings, record["model"], manifest=manifest, hw=hw, reason=reason)
    uri = write_serving_document(s3io.client_from_connection(), record["weights_uri"], served.pop("document"))
    reg.tag(record["model"], record["version"], {SERVING_DOCUMENT_TAG: uri, SERVING_SHA256_TAG: served["sha256"]})
    return {**served, "document_uri": uri}


LEASE_DAGS = ("model_refresh", "runtime_requalify")
"""The DAGs whose runs take a model's refresh lease: a refresh, and a runtime pin move."""


def lease_holder_alive(holder: str) -> bool:
    """Whether the run ``holder`` (a run id of one of :data:`LEASE_DAGS`) is still queued or running.

    Either DAG may hold the lease, so a refresh must not take it over from a live pin move (and
    the other way round). A run id found in either DAG counts: waiting is the safe side.
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    return any(RuntimeTaskInstance.get_dr_count(dag_id=dag_id, run_ids=[holder], states=["queued", "running"]) > 0
               for dag_id in LEASE_DAGS)


def claim_model(model: str, run_id: str, holder_alive: Any = lease_holder_alive) -> tuple[bool, str]:
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
