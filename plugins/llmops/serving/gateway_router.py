"""The production traffic router: a Gateway API ``HTTPRoute``'s ``backendRefs`` weights.

Patches the weights through the Kubernetes API (field manager ``llmops``, the owner of the rendered
route: see :mod:`llmops.serving.render`), then reads them back and waits until the Gateway reports
the new generation ``Accepted``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from llmops.io import kube
from llmops.serving.routers import BACKEND_HEADER, CANARY, STABLE, RouterError, WeightChange, check_percent

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
HTTPROUTE_PLURAL = "httproutes"
FIELD_MANAGER = "llmops"
"""The field manager of every write of the project's serving objects: the router's weight patches
and the server-side applies of :mod:`llmops.serving.objects` are one manager, so they do not fight."""


def backend_filter(role: str) -> dict[str, Any]:
    """A ``ResponseHeaderModifier`` filter that names ``role`` in ``X-Llmops-Backend``."""
    return {"type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"set": [{"name": BACKEND_HEADER, "value": role}]}}


def httproute_weights_patch(route: dict[str, Any], *, stable_service: str, canary_service: str,
                            canary_percent: int) -> dict[str, Any]:
    """The merge patch that sets the stable/canary ``backendRefs`` weights of ``route`` (pure).

    Each rule that refers to the stable service gets exactly two backendRefs: stable with
    weight ``100 - canary_percent`` and canary with ``canary_percent`` (a weight of 0 is valid
    in the Gateway API: no traffic), each with a response-header filter naming it. A merge
    patch replaces lists whole, so every rule is sent; ``metadata.resourceVersion`` makes the
    API server refuse the patch if someone changed the route since it was read.
    """
    percent = check_percent(canary_percent)
    rules = copy.deepcopy(route.get("spec", {}).get("rules") or [])
    touched = 0
    for rule in rules:
        refs = rule.get("backendRefs") or []
        names = {ref.get("name") for ref in refs}
        if stable_service not in names:
            continue
        template = next(ref for ref in refs if ref.get("name") == stable_service)
        others = [ref for ref in refs if ref.get("name") not in (stable_service, canary_service)]
        if others:
            raise RouterError(f"HTTPRoute rule has backendRefs {sorted(n for n in names if n)}; expected only "
                              f"{stable_service!r} and {canary_service!r}: remove the others from the route")
        rule["backendRefs"] = [
            _backend_ref(template, stable_service, 100 - percent, STABLE),
            _backend_ref(template, canary_service, percent, CANARY),
        ]
        touched += 1
    metadata = route.get("metadata", {})
    if not touched:
        raise RouterError(f"HTTPRoute {metadata.get('namespace')}/{metadata.get('name')}: no rule has a "
                          f"backendRef to the stable service {stable_service!r}; add one to the route")
    patch: dict[str, Any] = {"spec": {"rules": rules}}
    if metadata.get("resourceVersion"):
        patch["metadata"] = {"resourceVersion": metadata["resourceVersion"]}
    return patch


def route_weights(route: dict[str, Any], *, stable_service: str, canary_service: str) -> tuple[int, int]:
    """``(stable, canary)`` percent of the first rule routing to the stable service."""
    for rule in route.get("spec", {}).get("rules") or []:
        weights = {ref.get("name"): int(ref.get("weight", 1)) for ref in rule.get("backendRefs") or []}
        if stable_service in weights:
            stable, canary = weights[stable_service], weights.get(canary_service, 0)
            total = stable + canary
            if total == 0:
                raise RouterError(f"HTTPRoute rule routes nothing: {stable_service!r} and {canary_service!r} "
                                  "both have weight 0")
            canary_percent = round(100 * canary / total)
            return 100 - canary_percent, canary_percent
    raise RouterError(f"HTTPRoute has no rule with a backendRef to {stable_service!r}")


def _backend_ref(template: dict[str, Any], name: str, weight: int, role: str) -> dict[str, Any]:
    ref = {k: v for k, v in template.items() if k not in ("name", "weight", "filters")}
    filters = [f for f in template.get("filters") or []
               if not (f.get("type") == "ResponseHeaderModifier"
                       and any(h.get("name") == BACKEND_HEADER
                               for h in f.get("responseHeaderModifier", {}).get("set", [])))]
    return {**ref, "name": name, "weight": weight, "filters": [*filters, backend_filter(role)]}


class GatewayHttpRouteRouter:
    """Production: the split is an ``HTTPRoute``'s ``backendRefs`` weights, patched via the API.

    ``endpoint`` is the Gateway's URL the replayed traffic goes to. ``api`` is a
    ``kubernetes.client.CustomObjectsApi`` (default: built from the in-cluster config, or
    the kubeconfig outside a cluster).
    """

    def __init__(self, *, route: str, namespace: str, stable_service: str, canary_service: str, endpoint: str,
                 api: Any = None, confirm_timeout_s: float = 30.0, poll_s: float = 0.5) -> None:
        self.route = route
        self.namespace = namespace
        self.stable_service = stable_service
        self.canary_service = canary_service
        self._endpoint = endpoint.rstrip("/")
        self.api = api if api is not None else kube.custom_objects_api()
        self.confirm_timeout_s = confirm_timeout_s
        self.poll_s = poll_s

    @property
    def endpoint(self) -> str:
        """The Gateway's URL (clients send their traffic there)."""
        return self._endpoint

    def set_weights(self, canary_percent: int) -> WeightChange:
        """Patch the route's weights, then wait until the Gateway controller accepted that generation."""
        percent = check_percent(canary_percent)
        started = time.perf_counter()
        current = self._get()
        patch = httproute_weights_patch(current, stable_service=self.stable_service,
                                        canary_service=self.canary_service, canary_percent=percent)
        patched = self.api.patch_namespaced_custom_object(
            group=GATEWAY_GROUP, version=GATEWAY_VERSION, namespace=self.namespace, plural=HTTPROUTE_PLURAL,
            name=self.route, body=patch, field_manager=FIELD_MANAGER)
        generation = (patched or {}).get("metadata", {}).get("generation")
        confirmed_at = self._await_accepted(generation, percent)
        return WeightChange(100 - percent, percent, time.perf_counter() - started, confirmed_at)

    def weights(self) -> tuple[int, int]:
        """``(stable, canary)`` read back from the route's spec."""
        return route_weights(self._get(), stable_service=self.stable_service, canary_service=self.canary_service)

    def close(self) -> None:
        """Nothing to release: the route outlives the controller (that is the point)."""

    def _get(self) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(group=GATEWAY_GROUP, version=GATEWAY_VERSION,
                                                     namespace=self.namespace, plural=HTTPROUTE_PLURAL,
                                                     name=self.route)

    def _await_accepted(self, generation: int | None, percent: int) -> float:
        """Confirmed when the spec reads back the weights and every parent Gateway reports
        ``Accepted`` for this generation (the controller has programmed the data plane)."""
        deadline = time.monotonic() + self.confirm_timeout_s
        while True:
            route = self._get()
            weights_ok = route_weights(route, stable_service=self.stable_service,
                                       canary_service=self.canary_service)[1] == percent
            if weights_ok and route_accepted(route, generation):
                return time.time()
            if time.monotonic() >= deadline:
                raise RouterError(f"HTTPRoute {self.namespace}/{self.route}: weight {percent}% not accepted by "
                                  f"the Gateway within {self.confirm_timeout_s:g}s (generation {generation}); "
                                  "check `kubectl describe httproute` for its status conditions")
            time.sleep(self.poll_s)


def route_accepted(route: dict[str, Any], generation: int | None) -> bool:
    """Whether every parent Gateway reports ``Accepted`` for ``generation`` of ``route`` (true when no
    controller reports a status: the stored spec is then all there is)."""
    parents = route.get("status", {}).get("parents") or []
    if generation is None or not parents:
        # No status to wait for (no controller reports it): the read-back of the spec is all there is.
        return True
    for parent in parents:
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        accepted = conditions.get("Accepted")
        if not accepted or accepted.get("status") != "True" or accepted.get("observedGeneration", 0) < generation:
            return False
    return True
