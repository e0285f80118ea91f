"""Where a model's serving objects live: the Kubernetes API server, or a local stand-in for it.

Both modes share one interface, :class:`ServingObjects`: ``apply`` an object rendered by
:mod:`llmops.serving.render` (server-side apply, field manager ``llmops``, forced: the project
owns every field it renders), ``get`` the live object, ``wait_rolled_out`` a Deployment.

``gateway`` (a cluster)
    :class:`KubernetesServingObjects`: the real API calls, ``Deployment`` (``apps/v1``),
    ``Service`` (``v1``) and ``HTTPRoute`` (``gateway.networking.k8s.io/v1``).
``nginx`` (the embedded default)
    :class:`LocalServingObjects`: JSON files under ``<data dir>/serving/<namespace>``, so the
    embedded platform records exactly what a cluster would be given, and a reconcile or a
    reproduce run can compare against it.

:func:`serving_objects` picks one from the settings.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from llmops.config.settings import Settings
from llmops.core.deployment import DeploymentManifest
from llmops.core.limits import MANIFEST_MAX_BYTES
from llmops.io import kube
from llmops.io import s3 as s3io
from llmops.serving.gateway_router import (
    FIELD_MANAGER,
    GATEWAY_GROUP,
    GATEWAY_VERSION,
    HTTPROUTE_PLURAL,
    route_accepted,
)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
KINDS = ("Deployment", "Service", "HTTPRoute")

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class ServingRouteError(RuntimeError):
    """The serving objects could not be applied, read or rolled out; the message says what to check."""


class ServingObjects(Protocol):
    """The store of a model's serving objects (see the module docstring)."""

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` (field manager ``llmops``, forced); the object as stored."""
        ...

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The live object ``kind``/``name``, or ``None`` when there is none."""
        ...

    def wait_rolled_out(self, name: str) -> float:
        """Wait until Deployment ``name`` is rolled out; the seconds it took."""
        ...


def rolled_out(deployment: dict[str, Any]) -> bool:
    """``kubectl rollout status`` semantics: the controller saw the latest spec and every replica
    is updated and available, with no old replica left."""
    meta, spec, status = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status", {})
    wanted = spec.get("replicas", 1)
    return (status.get("observedGeneration", 0) >= meta.get("generation", 0)
            and status.get("updatedReplicas", 0) >= wanted
            and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
            and status.get("availableReplicas", 0) >= wanted)


def _check(kind: str, name: str) -> None:
    if kind not in KINDS:
        raise ServingRouteError(f"serving object kind {kind!r} is not one the project renders; fix: use one of "
                                f"{', '.join(KINDS)}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ServingRouteError(f"{kind} name {name!r} is not a Kubernetes object name; fix: use lowercase "
                                f"letters, digits, '-' and '.'")


def _identity(obj: dict[str, Any]) -> tuple[str, str]:
    kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
    _check(str(kind), name)
    return str(kind), name


class KubernetesServingObjects:
    """The serving objects of ``namespace`` in the cluster, through the Kubernetes API.

    ``apps_api``/``core_api``/``custom_api`` are ``AppsV1Api``/``CoreV1Api``/``CustomObjectsApi``,
    built from the in-cluster config (or the kube config) unless given: tests give a fake of the
    API server.
    """

    def __init__(self, namespace: str, *, apps_api: Any = None, core_api: Any = None, custom_api: Any = None,
                 rollout_timeout_s: float = 900.0, poll_s: float = 2.0, route_confirm_timeout_s: float = 30.0) -> None:
        self.namespace = namespace
        self.apps_api = apps_api if apps_api is not None else kube.apps_api()
        self.core_api = core_api if core_api is not None else kube.core_api()
        self.custom_api = custom_api if custom_api is not None else kube.custom_objects_api()
        self.rollout_timeout_s = rollout_timeout_s
        self.poll_s = poll_s
        self.route_confirm_timeout_s = route_confirm_timeout_s

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: the API server merges ``obj`` into the live object, the fields it
        sets owned by ``llmops`` (``force``: taken over from any other manager)."""
        kind, name = _identity(obj)
        apply = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY_CONTENT_TYPE}
        if kind == "Deployment":
            stored = self.apps_api.patch_namespaced_deployment(name=name, namespace=self.namespace, body=obj, **apply)
        elif kind == "Service":
            stored = self.core_api.patch_namespaced_service(name=name, namespace=self.namespace, body=obj, **apply)
        else:
            stored = self.custom_api.patch_namespaced_custom_object(
                group=GATEWAY_GROUP, version=GATEWAY_VERSION, namespace=self.namespace, plural=HTTPROUTE_PLURAL,
                name=name, body=obj, **apply)
            # Traffic moves when the Gateway has programmed this generation, not when the API server
            # stored it: wait for every parent's Accepted, as the canary's router does.
            self._await_route_accepted(name, _as_dict(stored).get("metadata", {}).get("generation"))
        return _as_dict(stored)

    def _await_route_accepted(self, name: str, generation: int | None) -> None:
        deadline = time.monotonic() + self.route_confirm_timeout_s
        while not route_accepted(self.get("HTTPRoute", name) or {}, generation):
            if time.monotonic() >= deadline:
                raise ServingRouteError(
                    f"HTTPRoute {self.namespace}/{name}: generation {generation} not accepted by the Gateway within "
                    f"{self.route_confirm_timeout_s:g}s; check `kubectl describe httproute {name} -n {self.namespace}`")
            time.sleep(self.poll_s)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The live object, or ``None`` on a 404."""
        _check(kind, name)
        try:
            if kind == "Deployment":
                found = self.apps_api.read_namespaced_deployment(name=name, namespace=self.namespace)
            elif kind == "Service":
                found = self.core_api.read_namespaced_service(name=name, namespace=self.namespace)
            else:
                found = self.custom_api.get_namespaced_custom_object(
                    group=GATEWAY_GROUP, version=GATEWAY_VERSION, namespace=self.namespace,
                    plural=HTTPROUTE_PLURAL, name=name)
        except Exception as exc:  # the client's ApiException; a fake's may be any exception with .status
            if getattr(exc, "status", None) == 404:
                return None
            raise
        return _as_dict(found)

    def wait_rolled_out(self, name: str) -> float:
        """Poll the Deployment's status until :func:`rolled_out`; :class:`ServingRouteError` after
        ``rollout_timeout_s``, naming the command to look at it."""
        _check("Deployment", name)
        started = time.monotonic()
        while True:
            status = self.apps_api.read_namespaced_deployment_status(name=name, namespace=self.namespace)
            if rolled_out(_as_dict(status)):
                return time.monotonic() - started
            if time.monotonic() - started > self.rollout_timeout_s:
                raise ServingRouteError(
                    f"Deployment {self.namespace}/{name} not rolled out within {self.rollout_timeout_s:g}s: check "
                    f"`kubectl rollout status deployment/{name} -n {self.namespace}` (a digest mismatch stops the "
                    f"fetch-weights init container; a pending pod waits for a GPU)")
            time.sleep(self.poll_s)


class LocalServingObjects:
    """The embedded default's stand-in for the API server's stored objects: ``<root>/<kind>/<name>.json``.

    A real server-side apply merges into the live object and keeps fields other managers own;
    that merge is not emulated: the local store holds exactly the last applied object (the
    project is the only writer on the embedded default). Files are written atomically (a
    temporary file renamed over the old one), so a reader never sees half an object.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, kind: str, name: str) -> Path:
        """Where object ``kind``/``name`` is stored."""
        _check(kind, name)
        return self.root / kind / f"{name}.json"

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as it is (see the class docstring); returns it."""
        target = self.path(*_identity(obj))
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(obj, sort_keys=True, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return json.loads(text)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The stored object, or ``None``."""
        target = self.path(kind, name)
        try:
            return json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def wait_rolled_out(self, name: str) -> float:
        """0.0 at once: nothing runs these objects on the embedded default (between pipeline runs
        nothing serves; during a canary the canary pod's own vLLM servers do), so there is no
        rollout to wait for."""
        _check("Deployment", name)
        return 0.0


def serving_objects(settings: Settings) -> ServingObjects:
    """The store of ``settings``' mode: the cluster (router ``gateway``) or the local files (``nginx``)."""
    if settings.canary_router == "gateway":
        return KubernetesServingObjects(settings.namespace)
    return LocalServingObjects(settings.data_dir / "serving" / settings.namespace)


def deployment_manifest_uri(weights_uri: str) -> str:
    """``<weights_uri>/deployment.json``: where the stage job pinned the version."""
    return weights_uri.rstrip("/") + "/deployment.json"


def serving_document_uri(weights_uri: str, role: str = "stable") -> str:
    """``<weights_uri>/serving-<role>.json``: the serving objects last applied for the version as ``role``."""
    return weights_uri.rstrip("/") + f"/serving-{role}.json"


def read_deployment_manifest(s3: Any, weights_uri: str) -> DeploymentManifest:
    """The version's deployment manifest, read from beside its weights (validated, at most
    :data:`~llmops.core.limits.MANIFEST_MAX_BYTES`)."""
    uri = deployment_manifest_uri(weights_uri)
    bucket, key = s3io.parse_s3_uri(uri)
    body, _ = s3io.read_bytes(s3, bucket, key, max_bytes=MANIFEST_MAX_BYTES, what="the deployment manifest",
                              fix="the stage job writes it beside the weights: re-stage the version")
    return DeploymentManifest.from_json(body, uri)


def write_serving_document(s3: Any, weights_uri: str, document: str, role: str = "stable") -> str:
    """Store ``document`` (exactly its bytes) beside the version's ``deployment.json``; its URI."""
    bucket, key = s3io.parse_s3_uri(serving_document_uri(weights_uri, role))
    s3.put_object(Bucket=bucket, Key=key, Body=document.encode(), ContentType="application/json")
    return s3io.s3_uri(bucket, key)


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None or isinstance(obj, dict):
        return obj or {}
    from kubernetes import client

    return client.ApiClient().sanitize_for_serialization(obj)
