"""Who serves a model's traffic outside a canary, and how the pipeline puts the champion back.

Two modes, chosen by ``LLMOPS_CANARY_ROUTER`` (:attr:`llmops.config.settings.Settings.canary_router`):

``gateway`` (a cluster)
    Each model has long-lived Deployments ``<model>-stable`` (the champion) and
    ``<model>-canary`` (a candidate, during a canary), Services of the same names, and an
    HTTPRoute ``<model>`` splitting traffic between them (Gateway API). The project owns them:
    they are rendered from the served version's pinned deployment manifest and its hardware
    class (:mod:`llmops.serving.render`) and applied by server-side apply
    (:mod:`llmops.serving.objects`). Promoting or rolling back = apply ``<model>-stable`` for the
    new champion, wait until it is rolled out, then apply the route 100/0; a canary = apply the
    route with 0 to canary, then ``<model>-canary`` for the candidate (the canary controller moves
    the weights from there). Restoring the champion = HTTPRoute weights 100/0 to stable.

``nginx`` (the embedded default)
    The proxy and both vLLM servers live inside the canary pod: nothing serves the model
    between pipeline runs, and the split ends with the pod (the local launcher kills the pod's
    whole process group, nginx included). The same objects are rendered and applied to the local
    store (:class:`~llmops.serving.objects.LocalServingObjects`), so what a cluster would run is
    recorded and reproducible; there is no persistent route to restore.

The pure parts (names, rendering, decisions) are separate from the Kubernetes I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmops.config.settings import Settings
from llmops.core.deployment import DeploymentManifest
from llmops.core.hardware import HardwareClass
from llmops.serving.objects import ServingObjects, ServingRouteError, rolled_out, serving_objects
from llmops.serving.render import (
    DIGEST_ANNOTATION,
    VERSION_ANNOTATION,
    RenderError,
    render_role,
    serving_document,
)
from llmops.serving.routers import CANARY, STABLE

FETCH_CONTAINER = "fetch-weights"
SERVING_CONTAINER = "vllm"
__all__ = ["DIGEST_ANNOTATION", "VERSION_ANNOTATION", "ServingRouteError", "rolled_out"]


@dataclass(frozen=True)
class ServingRoute:
    """The Kubernetes objects that serve one model (gateway mode)."""

    model: str
    namespace: str
    route: str
    stable: str
    canary: str
    gateway_url: str

    @classmethod
    def for_model(cls, settings: Settings, model: str) -> ServingRoute:
        """Names by convention: HTTPRoute ``<model>``, Deployments/Services ``<model>-stable|canary``."""
        return cls(model=model, namespace=settings.namespace, route=model, stable=f"{model}-stable",
                   canary=f"{model}-canary",
                   gateway_url=settings.gateway_url_template.format(model=model, namespace=settings.namespace))

    def controller_args(self) -> list[str]:
        """The canary controller's ``--router gateway`` flags for this route."""
        return ["--router", "gateway", "--route", self.route, "--route-namespace", self.namespace,
                "--stable-service", self.stable, "--canary-service", self.canary, "--gateway-url", self.gateway_url]


class GatewayServing:
    """Gateway-mode I/O: the HTTPRoute's weights, through the canary's router.

    ``router`` is a :class:`~llmops.serving.gateway_router.GatewayHttpRouteRouter`, built from the
    in-cluster config unless given (tests give a fake of the Kubernetes API).
    """

    def __init__(self, route: ServingRoute, *, router: Any = None) -> None:
        from llmops.serving.gateway_router import GatewayHttpRouteRouter

        self.route = route
        self.router = router if router is not None else GatewayHttpRouteRouter(
            route=route.route, namespace=route.namespace, stable_service=route.stable,
            canary_service=route.canary, endpoint=route.gateway_url)

    def all_to_stable(self) -> dict[str, Any]:
        """HTTPRoute 100/0 to stable, confirmed by the Gateway (idempotent)."""
        before = self.router.weights()
        change = self.router.set_weights(0)
        return {"weights_before": list(before), "weights": [change.stable, change.canary],
                "applied_s": round(change.applied_s, 3)}


def restore_champion_routing(settings: Settings, model: str, *,
                             serving: GatewayServing | None = None) -> dict[str, Any]:
    """Every request back to the champion (stable): the teardown after any canary, whatever its outcome.

    Always safe: after a promotion ``stable`` already serves the new champion, so 100/0 is the
    end state either way; after a failure or a killed canary pod it takes the candidate out.
    """
    if settings.canary_router != "gateway":
        return {"router": settings.canary_router, "action": "none",
                "why": "the proxy lived inside the canary pod and ended with it; nothing serves between runs"}
    serving = serving or GatewayServing(ServingRoute.for_model(settings, model))
    return {"router": "gateway", "action": "all_to_stable", **serving.all_to_stable()}


def roll(objects: ServingObjects, rendered: Sequence[dict[str, Any]]) -> float:
    """Apply ``rendered`` in order, waiting after each Deployment until it is rolled out (so a
    route applied after it never sends traffic to a half-rolled Deployment); the seconds waited."""
    waited = 0.0
    for obj in rendered:
        objects.apply(obj)
        if obj["kind"] == "Deployment":
            waited += objects.wait_rolled_out(obj["metadata"]["name"])
    return waited


def serve_champion(settings: Settings, model: str, *, manifest: DeploymentManifest, hw: HardwareClass,
                   reason: str, objects: ServingObjects | None = None) -> dict[str, Any]:
    """Serve ``manifest``'s version as ``<model>-stable`` (promotion or rollback), then route it all traffic.

    Applies the Deployment and Service rendered from the manifest and ``hw``, waits for the
    rollout, then applies the HTTPRoute 100/0. Returns the rendered ``document``
    (:func:`~llmops.serving.render.serving_document`, for the caller to store) and its ``sha256``.
    """
    return _serve(settings, model, STABLE, manifest=manifest, hw=hw, objects=objects, reason=reason)


def serve_candidate(settings: Settings, model: str, *, manifest: DeploymentManifest, hw: HardwareClass,
                    extra_vllm_args: Sequence[str] = (), objects: ServingObjects | None = None) -> dict[str, Any]:
    """Before a gateway canary: the route with nothing to canary, then ``<model>-canary`` serving the candidate.

    ``extra_vllm_args`` (``canary_vllm_args``) go to the canary Deployment only, and must be
    checked by the caller (``llmops.canary.plan.check_extra_args`` with ``managed_flags``).
    """
    return _serve(settings, model, CANARY, manifest=manifest, hw=hw, objects=objects, reason="canary",
                  extra_vllm_args=extra_vllm_args)


def _serve(settings: Settings, model: str, role: str, *, manifest: DeploymentManifest, hw: HardwareClass,
           objects: ServingObjects | None, reason: str, extra_vllm_args: Sequence[str] = ()) -> dict[str, Any]:
    if manifest.model_name != model:
        raise RenderError(f"deployment manifest of {manifest.model_name!r} version {manifest.model_version} cannot "
                          f"serve model {model!r}; fix: pass the deployment.json of a version of {model!r}")
    rendered = render_role(manifest, hw, settings, role=role, extra_vllm_args=extra_vllm_args)
    document = serving_document(rendered)
    objects = objects if objects is not None else serving_objects(settings)
    rollout_s = roll(objects, rendered)
    return {"router": settings.canary_router, "action": f"applied_{role}", "role": role, "model": model,
            "version": manifest.model_version, "reason": reason, "rollout_s": round(rollout_s, 3),
            "objects": [f"{obj['kind']}/{obj['metadata']['name']}" for obj in rendered],
            "document": document, "sha256": hashlib.sha256(document.encode()).hexdigest()}
