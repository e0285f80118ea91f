"""Who serves a model's traffic outside a canary, and how the pipeline puts the champion back.

Two modes, chosen by ``LLMOPS_CANARY_ROUTER`` (:attr:`llmops.config.settings.Settings.canary_router`):

``gateway`` (a cluster)
    Each model has long-lived Deployments ``<model>-stable`` (the champion) and
    ``<model>-canary`` (a candidate, during a canary), Services of the same names, and an
    HTTPRoute ``<model>`` splitting traffic between them (Gateway API). Both Deployments follow
    the contract of :func:`serve_version_patch`: an init container ``fetch-weights`` and a
    container ``vllm`` read ``LLMOPS_WEIGHTS_URI`` / ``LLMOPS_WEIGHT_DIGEST`` / ``LLMOPS_MODEL_DIR``
    (``vllm serve $(LLMOPS_MODEL_DIR)``), so pointing one at a version is a patch of those and a
    rolling update: the init container verifies the digest before vLLM starts, as in every pod.
    Restoring the champion = HTTPRoute weights 100/0 to stable; promoting or rolling back =
    roll ``<model>-stable`` to the new champion, wait until it is rolled out, then 100/0.

``nginx`` (the embedded default)
    The proxy and both vLLM servers live inside the canary pod: nothing serves the model
    between pipeline runs, and the split ends with the pod (the local launcher kills the pod's
    whole process group, nginx included). The functions here then record that there is no
    persistent route to change rather than pretend to change one.

The pure parts (names, patches, decisions) are separate from the Kubernetes I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmops.config.settings import Settings
from llmops.io import kube

VERSION_ANNOTATION = "llmops.io/model-version"
DIGEST_ANNOTATION = "llmops.io/weight-digest"
REASON_ANNOTATION = "llmops.io/rolled-for"
FETCH_CONTAINER = "fetch-weights"
SERVING_CONTAINER = "vllm"


class ServingRouteError(RuntimeError):
    """The serving route could not be restored or rolled; the message says what to check."""


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


def serve_version_patch(*, weights_uri: str, weight_digest: str, model_dir: str, version: str,
                        reason: str) -> dict[str, Any]:
    """Strategic-merge patch pointing a serving Deployment at one model version.

    Containers merge by name, so only the two named containers' variables change; the changed
    pod-template annotations make the rollout happen even when re-serving the same version.
    """
    env = [{"name": "LLMOPS_WEIGHTS_URI", "value": weights_uri},
           {"name": "LLMOPS_WEIGHT_DIGEST", "value": weight_digest},
           {"name": "LLMOPS_MODEL_DIR", "value": model_dir}]
    return {"spec": {"template": {
        "metadata": {"annotations": {VERSION_ANNOTATION: version, DIGEST_ANNOTATION: weight_digest,
                                     REASON_ANNOTATION: f"{reason} {datetime.now(UTC).isoformat()}"}},
        "spec": {"initContainers": [{"name": FETCH_CONTAINER, "env": env}],
                 "containers": [{"name": SERVING_CONTAINER, "env": env}]},
    }}}


def rolled_out(deployment: dict[str, Any]) -> bool:
    """``kubectl rollout status`` semantics: the controller saw the latest spec and every replica
    is updated and available, with no old replica left."""
    meta, spec, status = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status", {})
    wanted = spec.get("replicas", 1)
    return (status.get("observedGeneration", 0) >= meta.get("generation", 0)
            and status.get("updatedReplicas", 0) >= wanted
            and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
            and status.get("availableReplicas", 0) >= wanted)


class GatewayServing:
    """Gateway-mode I/O: HTTPRoute weights (through the canary's router) and Deployment rollouts.

    ``apps_api`` is a ``kubernetes.client.AppsV1Api`` and ``router`` a
    :class:`~llmops.serving.gateway_router.GatewayHttpRouteRouter`; both are built from the in-cluster config
    unless given (tests give fakes of the Kubernetes API).
    """

    def __init__(self, route: ServingRoute, *, apps_api: Any = None, router: Any = None,
                 rollout_timeout_s: float = 900.0, poll_s: float = 2.0) -> None:
        from llmops.serving.gateway_router import GatewayHttpRouteRouter

        self.route = route
        self.apps_api = apps_api if apps_api is not None else kube.apps_api()
        self.router = router if router is not None else GatewayHttpRouteRouter(
            route=route.route, namespace=route.namespace, stable_service=route.stable,
            canary_service=route.canary, endpoint=route.gateway_url)
        self.rollout_timeout_s = rollout_timeout_s
        self.poll_s = poll_s

    def all_to_stable(self) -> dict[str, Any]:
        """HTTPRoute 100/0 to stable, confirmed by the Gateway (idempotent)."""
        before = self.router.weights()
        change = self.router.set_weights(0)
        return {"weights_before": list(before), "weights": [change.stable, change.canary],
                "applied_s": round(change.applied_s, 3)}

    def roll(self, deployment: str, patch: dict[str, Any]) -> float:
        """Patch ``deployment`` and wait until the rollout finished; returns the seconds it took."""
        started = time.monotonic()
        self.apps_api.patch_namespaced_deployment(name=deployment, namespace=self.route.namespace, body=patch)
        while True:
            current = self.apps_api.read_namespaced_deployment_status(name=deployment,
                                                                       namespace=self.route.namespace)
            if rolled_out(_as_dict(current)):
                return time.monotonic() - started
            if time.monotonic() - started > self.rollout_timeout_s:
                raise ServingRouteError(
                    f"Deployment {self.route.namespace}/{deployment} not rolled out within "
                    f"{self.rollout_timeout_s:g}s: check `kubectl rollout status deployment/{deployment} "
                    f"-n {self.route.namespace}` (a digest mismatch stops the fetch-weights init container)")
            time.sleep(self.poll_s)


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


def serve_champion(settings: Settings, model: str, *, version: str, weights_uri: str, weight_digest: str,
                   reason: str, serving: GatewayServing | None = None) -> dict[str, Any]:
    """Roll ``<model>-stable`` to ``version`` (promotion or rollback), then route it all traffic."""
    from llmops.serving.weights import model_dir

    if settings.canary_router != "gateway":
        return {"router": settings.canary_router, "action": "none",
                "why": "no long-lived serving on the embedded default: the next pod serves from current.json"}
    serving = serving or GatewayServing(ServingRoute.for_model(settings, model))
    patch = serve_version_patch(weights_uri=weights_uri, weight_digest=weight_digest,
                                model_dir=model_dir(model, weight_digest), version=version, reason=reason)
    rollout_s = serving.roll(serving.route.stable, patch)
    return {"router": "gateway", "action": "rolled_stable", "version": version, "rollout_s": round(rollout_s, 3),
            **serving.all_to_stable()}


def serve_candidate(settings: Settings, model: str, *, version: str, weights_uri: str, weight_digest: str,
                    serving: GatewayServing | None = None) -> dict[str, Any]:
    """Before a gateway canary: route nothing to canary, then roll ``<model>-canary`` to the candidate."""
    from llmops.serving.weights import model_dir

    serving = serving or GatewayServing(ServingRoute.for_model(settings, model))
    routed = serving.all_to_stable()
    patch = serve_version_patch(weights_uri=weights_uri, weight_digest=weight_digest,
                                model_dir=model_dir(model, weight_digest), version=version, reason="canary")
    return {**routed, "rollout_s": round(serving.roll(serving.route.canary, patch), 3)}


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    from kubernetes import client

    return client.ApiClient().sanitize_for_serialization(obj)
