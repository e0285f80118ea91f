"""Reconciling one model's serving objects: read the pinned render and the live objects, diff them
(:mod:`llmops.serving.reconcile`, pure), and on request re-apply the pinned render.

The **pinned render** is what promote (or rollback) applied: the serving version named by
``deployments/<model>/current.json`` in the models bucket, its ``deployment.json`` beside the
weights (:class:`~llmops.core.deployment.DeploymentManifest`), the default hardware class,
rendered by :func:`llmops.serving.render.render_serving` (role ``stable``) and
:func:`~llmops.serving.render.render_route` (all traffic to stable). The ``<model>-canary``
Deployment is not compared: between canaries it keeps whatever the last candidate was, and the
route gives it no traffic (that weight is compared).

The **live objects** come from :func:`llmops.serving.objects.serving_objects`: the Kubernetes API
in a cluster, the local store of the embedded default.

A hardware class whose config changed since the version was qualified on it is a finding too;
then the render is no longer the pinned one, so :func:`reapply` refuses to apply it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmops.config.settings import Settings
from llmops.core.deployment import DeploymentManifest
from llmops.core.hardware import HardwareClass, config_path, load_hardware_class
from llmops.io import s3 as s3io
from llmops.serving.objects import deployment_manifest_uri, read_deployment_manifest
from llmops.serving.reconcile import Drift, LiveObjects, diff_serving, hardware_drift, object_key, reconcile_verdict
from llmops.serving.routers import STABLE

DEPLOYMENTS_PREFIX = "deployments/"
CURRENT_NAME = "current.json"


class ReconcileError(RuntimeError):
    """The pinned render cannot be read or applied; the message names the object, the field and the fix."""


@dataclass
class Pinned:
    """What one model's serving objects must be: the serving version and its render."""

    model: str
    version: str
    manifest_uri: str
    hardware_class: str
    objects: list[dict[str, Any]]
    hardware: Drift | None = None
    notes: list[str] = field(default_factory=list)


def current_key(model: str) -> str:
    """Where promote and rollback record ``model``'s serving version in the models bucket."""
    return f"{DEPLOYMENTS_PREFIX}{model}/{CURRENT_NAME}"


def models_with_current(s3: Any, bucket: str) -> list[str]:
    """Every model with a ``deployments/<model>/current.json`` (one promoted at least once), sorted."""
    models = []
    for obj in s3io.list_prefix(s3, bucket, DEPLOYMENTS_PREFIX):
        parts = obj.key[len(DEPLOYMENTS_PREFIX):].split("/")
        if len(parts) == 2 and parts[1] == CURRENT_NAME and parts[0]:
            models.append(parts[0])
    return sorted(models)


def read_manifest(s3: Any, bucket: str, model: str) -> tuple[str, DeploymentManifest, str]:
    """``(version, manifest, manifest URI)`` of ``model``'s serving version; raises :class:`ReconcileError`."""
    where = s3io.s3_uri(bucket, current_key(model))
    current = s3io.read_json_if_exists(s3, bucket, current_key(model))
    if current is None:
        raise ReconcileError(f"{where}: no such object: model {model!r} has never been promoted; fix: promote a "
                             f"version (model_refresh) or leave the model out of the reconcile")
    if not isinstance(current, dict) or not current.get("version") or not current.get("weights_uri"):
        raise ReconcileError(f"{where}: version and weights_uri are required; fix: re-run the promote or rollback "
                             f"that wrote it")
    version, weights_uri = str(current["version"]), str(current["weights_uri"])
    manifest_uri = deployment_manifest_uri(weights_uri)
    try:
        manifest = read_deployment_manifest(s3, weights_uri)
    except FileNotFoundError as exc:
        raise ReconcileError(f"{manifest_uri}: no such object (named by {where} weights_uri); fix: re-stage version "
                             f"{version} of {model!r} (the stage job writes deployment.json)") from exc
    if manifest.model_version != version:
        raise ReconcileError(f"{manifest_uri}: model_version {manifest.model_version!r} but {where} serves version "
                             f"{version!r}; fix: check which of the two was overwritten and re-promote the version")
    return version, manifest, manifest_uri


def pinned_render(settings: Settings, model: str, *, s3: Any, bucket: str,
                  hw: HardwareClass | None = None) -> Pinned:
    """The pinned serving objects of ``model`` on the default hardware class (and its hardware finding)."""
    from llmops.serving.render import render_route, render_serving

    version, manifest, uri = read_manifest(s3, bucket, model)
    hw = hw or load_hardware_class(settings.default_hardware_class, settings.hardware_configs_dir)
    config_file = str(config_path(hw.name, settings.hardware_configs_dir))
    drift = hardware_drift(hw.name, manifest.hardware_configs.get(hw.name), hw.config_hash, config_file)
    pinned = Pinned(model=model, version=version, manifest_uri=uri, hardware_class=hw.name, objects=[],
                    hardware=drift)
    if hw.name not in manifest.hardware_configs:
        pinned.notes.append(f"not rendered: {uri} pins no config for class {hw.name!r}")
        return pinned
    pinned.objects = [*render_serving(manifest, hw, settings, role=STABLE),
                      render_route(model, settings, canary_percent=0)]
    return pinned


def live_objects(store: Any, desired: list[dict[str, Any]]) -> LiveObjects:
    """The live object of each rendered one, by ``(kind, name)`` (``None`` when absent)."""
    return {object_key(obj): store.get(*object_key(obj)) for obj in desired}


def check(pinned: Pinned, store: Any) -> dict[str, Any]:
    """The verdict on ``pinned``'s live objects, as JSON-ready data (an XCom)."""
    drifts = ([pinned.hardware] if pinned.hardware else []) + diff_serving(pinned.objects,
                                                                          live_objects(store, pinned.objects))
    return {"model": pinned.model, "version": pinned.version, "manifest": pinned.manifest_uri,
            "hardware_class": pinned.hardware_class, "notes": list(pinned.notes),
            **reconcile_verdict(drifts), "findings": [d.to_dict() for d in drifts]}


def reapply(pinned: Pinned, store: Any) -> dict[str, Any]:
    """Apply ``pinned``'s render (server-side apply), then diff again to prove it converged.

    Refuses when the hardware config changed since qualification: the render of today's config
    is not the pinned one, and applying it would serve an unqualified configuration.
    """
    if pinned.hardware is not None:
        raise ReconcileError(f"model {pinned.model!r} version {pinned.version}: not re-applied: "
                             f"{pinned.hardware.line()}")
    before = check(pinned, store)
    applied = []
    for obj in pinned.objects:
        store.apply(obj)
        applied.append("/".join(object_key(obj)))
    after = check(pinned, store)
    return {**after, "applied": applied, "drifts_before": before["drifts"], "reasons_before": before["reasons"]}


def reconcile_model(settings: Settings, model: str, *, s3: Any, bucket: str, store: Any, reapply_render: bool,
                    busy: str | None = None) -> dict[str, Any]:
    """One model's report: ``status`` ``ok`` / ``drifted`` (findings with reasons), ``skipped``
    (``busy`` says why: a refresh run owns the objects now) or ``error`` (the pinned render
    could not be read or re-applied; the reason names the object and the fix).

    With ``reapply_render`` the pinned render is applied and the report is the diff after it.
    """
    from llmops.core.hardware import HardwareConfigError
    from llmops.core.manifests import ManifestError

    if busy:
        return {"model": model, "status": "skipped", "drifts": 0, "reasons": [busy], "findings": []}
    try:
        pinned = pinned_render(settings, model, s3=s3, bucket=bucket)
        return reapply(pinned, store) if reapply_render else check(pinned, store)
    except (ReconcileError, ManifestError, HardwareConfigError) as exc:
        return {"model": model, "status": "error", "drifts": 0, "reasons": [str(exc)], "findings": []}


class ServingDrift(RuntimeError):
    """The live serving objects differ from the pinned render (or could not be checked)."""


def check_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Raise :class:`ServingDrift` naming every drifted field of every model; else a summary."""
    bad = [r for r in reports if r.get("status") in ("drifted", "error")]
    summary = {r["model"]: r["status"] for r in reports}
    if not bad:
        return {"status": "ok", "models": summary}
    lines = [f"{r['model']}: {reason}" for r in bad for reason in r.get("reasons", [])]
    fixed = " (after re-applying the pinned render)" if any("applied" in r for r in bad) else ""
    raise ServingDrift(f"serving objects of {len(bad)} model(s) differ from the pinned render{fixed}:\n"
                       + "\n".join(f"  - {line}" for line in lines))
