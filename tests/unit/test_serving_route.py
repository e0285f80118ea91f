"""Serving a version: restoring the champion's route (gateway mode), and applying the stable/canary
objects rendered from the version's pins, against an in-memory stand-in for the Kubernetes API
server (there is no cluster here) and the embedded default's local store."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from llmops.canary.plan import canary_controller_job
from llmops.config import settings as settings_mod
from llmops.core.hardware import load_hardware_class
from llmops.jobs import canary as canary_job
from llmops.serving.deployments import (
    DIGEST_ANNOTATION,
    FETCH_CONTAINER,
    SERVING_CONTAINER,
    VERSION_ANNOTATION,
    GatewayServing,
    ServingRoute,
    ServingRouteError,
    restore_champion_routing,
    serve_candidate,
    serve_champion,
)
from llmops.serving.gateway_router import GatewayHttpRouteRouter
from llmops.serving.objects import LocalServingObjects
from llmops.serving.render import RenderError, render_role, serving_document
from tests.unit.test_serving_objects import FakeApiServer
from tests.unit.test_serving_render import hardware, manifest

DIGEST = "ab" * 32


class FakeCluster:
    """An HTTPRoute, with the API calls the canary router makes, logged in order; the Gateway
    accepts a route generation at once."""

    def __init__(self, model: str = "chat", *, canary_weight: int = 0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.route = {
            "metadata": {"name": model, "namespace": "llmops", "generation": 1, "resourceVersion": "1"},
            "spec": {"rules": [{"backendRefs": [
                {"name": f"{model}-stable", "port": 8000, "weight": 100 - canary_weight},
                {"name": f"{model}-canary", "port": 8000, "weight": canary_weight}]}]},
            "status": {"parents": [{"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 1}]}]},
        }

    # CustomObjectsApi
    def get_namespaced_custom_object(self, **kw: Any) -> dict[str, Any]:
        return copy.deepcopy(self.route)

    def patch_namespaced_custom_object(self, *, body: dict[str, Any], name: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("patch_route", name))
        self.route["spec"] = copy.deepcopy(body["spec"])
        self.route["metadata"]["generation"] += 1
        generation = self.route["metadata"]["generation"]
        self.route["status"]["parents"][0]["conditions"][0]["observedGeneration"] = generation
        return copy.deepcopy(self.route)

    def weights(self) -> tuple[int, int]:
        refs = self.route["spec"]["rules"][0]["backendRefs"]
        return refs[0]["weight"], refs[1]["weight"]


def _gateway_settings() -> settings_mod.Settings:
    return settings_mod.load({"LLMOPS_LAUNCHER": "kubernetes", "LLMOPS_K8S_NAMESPACE": "llmops"})


def _serving(cluster: FakeCluster, model: str = "chat") -> GatewayServing:
    route = ServingRoute.for_model(_gateway_settings(), model)
    router = GatewayHttpRouteRouter(route=route.route, namespace=route.namespace, stable_service=route.stable,
                                    canary_service=route.canary, endpoint=route.gateway_url, api=cluster, poll_s=0.0)
    return GatewayServing(route, router=router)


def test_router_follows_the_launcher_and_refuses_unknown_values() -> None:
    assert settings_mod.load({}).canary_router == "nginx"
    assert _gateway_settings().canary_router == "gateway"
    assert settings_mod.load({"LLMOPS_CANARY_ROUTER": "gateway"}).canary_router == "gateway"
    with pytest.raises(settings_mod.SettingsError, match="LLMOPS_CANARY_ROUTER='istio'"):
        settings_mod.load({"LLMOPS_CANARY_ROUTER": "istio"})


def test_route_names_follow_the_model() -> None:
    route = ServingRoute.for_model(replace(_gateway_settings(), gateway_url_template="https://{model}.example.com"),
                                   "tiny-chat")
    assert (route.route, route.stable, route.canary) == ("tiny-chat", "tiny-chat-stable", "tiny-chat-canary")
    assert route.gateway_url == "https://tiny-chat.example.com"
    args = route.controller_args()
    assert args[args.index("--stable-service") + 1] == "tiny-chat-stable"
    assert args[args.index("--route-namespace") + 1] == "llmops"


def test_embedded_mode_has_no_persistent_route_to_restore() -> None:
    restored = restore_champion_routing(settings_mod.load({}), "chat")
    assert restored["action"] == "none" and "canary pod" in restored["why"]


@pytest.mark.parametrize("canary_weight", [0, 5, 50, 100])
def test_restore_sends_everything_back_to_stable(canary_weight: int) -> None:
    cluster = FakeCluster(canary_weight=canary_weight)
    restored = restore_champion_routing(_gateway_settings(), "chat", serving=_serving(cluster))
    assert cluster.weights() == (100, 0)
    assert restored["weights_before"] == [100 - canary_weight, canary_weight]
    assert restored["weights"] == [100, 0]


def test_serving_a_new_champion_rolls_stable_before_routing_to_it() -> None:
    api = FakeApiServer(rollout_reads=2)
    hw = hardware("h100x1")
    served = serve_champion(_gateway_settings(), "chat", manifest=manifest(hw), hw=hw, reason="promote",
                            objects=api.store())
    assert served["action"] == "applied_stable" and served["version"] == "7" and served["router"] == "gateway"
    # The route moved only after the stable rollout finished: never to a half-rolled Deployment.
    assert api.calls == [("apply", "Deployment", "chat-stable"), *[("status", "Deployment", "chat-stable")] * 3,
                         ("apply", "Service", "chat-stable"), ("apply", "HTTPRoute", "chat"),
                         ("get", "HTTPRoute", "chat")]  # the route applied only once the Gateway accepted it
    deployment, _, route = api.applied
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][VERSION_ANNOTATION] == "7"
    assert template["metadata"]["annotations"][DIGEST_ANNOTATION] == DIGEST
    [fetch], [vllm] = template["spec"]["initContainers"], template["spec"]["containers"]
    assert (fetch["name"], vllm["name"]) == (FETCH_CONTAINER, SERVING_CONTAINER)
    assert fetch["args"][fetch["args"].index("--weight-digest") + 1] == DIGEST
    assert vllm["args"][0] == f"/models/chat/sha256-{DIGEST}"
    assert [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]
    # What was applied is the document returned for storage, byte for byte.
    assert served["document"] == serving_document(api.applied)
    assert served["objects"] == ["Deployment/chat-stable", "Service/chat-stable", "HTTPRoute/chat"]
    assert not any(name.startswith("chat-canary") for _, _, name in api.calls)


def test_a_candidate_is_rolled_out_with_no_traffic() -> None:
    api = FakeApiServer()
    hw = hardware("h100x1")
    served = serve_candidate(_gateway_settings(), "chat", manifest=manifest(hw, version="8"), hw=hw,
                             extra_vllm_args=["--enforce-eager"], objects=api.store())
    assert [c for c in api.calls if c[0] == "apply"] == [
        ("apply", "HTTPRoute", "chat"), ("apply", "Deployment", "chat-canary"), ("apply", "Service", "chat-canary")]
    route, deployment, _ = api.applied
    assert [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]
    assert "--enforce-eager" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert served["action"] == "applied_canary" and served["version"] == "8"


def test_a_rollout_that_never_finishes_is_an_error_naming_the_deployment() -> None:
    api = FakeApiServer(rollout_reads=10**6)
    hw = hardware("cpu")
    with pytest.raises(ServingRouteError, match=r"chat-stable not rolled out .*kubectl rollout status"):
        serve_champion(_gateway_settings(), "chat", manifest=manifest(hw), hw=hw, reason="rollback",
                       objects=api.store(rollout_timeout_s=0.0))
    assert [c for c in api.calls if c[0] == "apply"] == [("apply", "Deployment", "chat-stable")]  # no route moved


def test_the_embedded_default_applies_to_the_local_store(tmp_path: Any) -> None:
    conf = settings_mod.load({"LLMOPS_DATA_DIR": str(tmp_path)})
    hw = hardware("cpu")
    served = serve_champion(conf, "chat", manifest=manifest(hw), hw=hw, reason="promote")
    assert served["router"] == "nginx" and served["rollout_s"] == 0.0
    store = LocalServingObjects(tmp_path / "serving" / "llmops")
    stored = [store.get("Deployment", "chat-stable"), store.get("Service", "chat-stable"),
              store.get("HTTPRoute", "chat")]
    assert serving_document(stored) == served["document"] == serving_document(
        render_role(manifest(hw), hw, conf, role="stable"))


def test_a_manifest_of_another_model_is_refused() -> None:
    hw = hardware("cpu")
    with pytest.raises(RenderError, match="cannot serve model 'other'; fix: pass the deployment.json of a version"):
        serve_champion(_gateway_settings(), "other", manifest=manifest(hw), hw=hw, reason="promote",
                       objects=FakeApiServer().store())


def test_gateway_canary_job_is_the_controller_alone() -> None:
    conf = _gateway_settings()
    hw = load_hardware_class("h100x1", conf.hardware_configs_dir)
    spec = {"steps": [{"weight": 5, "window_s": 300}, {"weight": 50, "window_s": 300}], "failure_limit": 2}
    route = ServingRoute.for_model(conf, "chat")
    job = canary_controller_job(conf, hw, route_args=route.controller_args(), served_model_name="chat", spec=spec,
                                model_stable="chat@1", model_canary="chat@2", exit_zero_on_rollback=True,
                                tags={"model": "chat"})
    assert job.sidecars == () and job.main.resources.gpus == 0
    parsed = canary_job.parse_args(list(job.main.args))
    assert parsed.router == "gateway" and parsed.route == "chat" and parsed.canary_service == "chat-canary"
    assert parsed.exit_zero_on_rollback and parsed.tag == ["hardware_class=h100x1",
                                                           f"hardware_config_hash={hw.config_hash}", "model=chat"]
    assert job.timeout_s >= 600 + 2 * 300
