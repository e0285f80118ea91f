"""Gateway-mode serving: restoring the champion's route and rolling the stable/canary Deployments,
against an in-memory stand-in for the Kubernetes API server (there is no cluster here)."""

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
    rolled_out,
    serve_candidate,
    serve_champion,
    serve_version_patch,
)
from llmops.serving.gateway_router import GatewayHttpRouteRouter

DIGEST = "ab" * 32


class FakeCluster:
    """An HTTPRoute and two Deployments, with the API calls the pipeline makes, logged in order.

    A patched Deployment reports its rollout done after ``rollout_reads`` status reads; the
    Gateway accepts a route generation at once.
    """

    def __init__(self, model: str = "chat", *, canary_weight: int = 0, rollout_reads: int = 2) -> None:
        self.calls: list[tuple[str, str]] = []
        self.rollout_reads = rollout_reads
        self.route = {
            "metadata": {"name": model, "namespace": "llmops", "generation": 1, "resourceVersion": "1"},
            "spec": {"rules": [{"backendRefs": [
                {"name": f"{model}-stable", "port": 8000, "weight": 100 - canary_weight},
                {"name": f"{model}-canary", "port": 8000, "weight": canary_weight}]}]},
            "status": {"parents": [{"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 1}]}]},
        }
        self.deployments = {name: {"metadata": {"name": name, "generation": 1}, "spec": {"replicas": 2},
                                   "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                                              "availableReplicas": 2}, "patches": [], "reads_left": 0}
                            for name in (f"{model}-stable", f"{model}-canary")}

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

    # AppsV1Api
    def patch_namespaced_deployment(self, *, name: str, namespace: str, body: dict[str, Any]) -> None:
        self.calls.append(("patch_deployment", name))
        deployment = self.deployments[name]
        deployment["patches"].append(body)
        deployment["metadata"]["generation"] += 1
        deployment["status"]["updatedReplicas"] = 0
        deployment["reads_left"] = self.rollout_reads

    def read_namespaced_deployment_status(self, *, name: str, namespace: str) -> dict[str, Any]:
        deployment = self.deployments[name]
        if deployment["reads_left"] > 0:
            deployment["reads_left"] -= 1
        else:
            deployment["status"].update(observedGeneration=deployment["metadata"]["generation"], updatedReplicas=2)
        return {k: copy.deepcopy(v) for k, v in deployment.items() if k in ("metadata", "spec", "status")}

    def weights(self) -> tuple[int, int]:
        refs = self.route["spec"]["rules"][0]["backendRefs"]
        return refs[0]["weight"], refs[1]["weight"]


def _gateway_settings() -> settings_mod.Settings:
    return settings_mod.load({"LLMOPS_LAUNCHER": "kubernetes", "LLMOPS_K8S_NAMESPACE": "llmops"})


def _serving(cluster: FakeCluster, model: str = "chat", **kwargs: Any) -> GatewayServing:
    route = ServingRoute.for_model(_gateway_settings(), model)
    router = GatewayHttpRouteRouter(route=route.route, namespace=route.namespace, stable_service=route.stable,
                                    canary_service=route.canary, endpoint=route.gateway_url, api=cluster, poll_s=0.0)
    return GatewayServing(route, apps_api=cluster, router=router, poll_s=0.0, **kwargs)


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
    cluster = FakeCluster(canary_weight=100)  # a promoted canary has all the traffic
    served = serve_champion(_gateway_settings(), "chat", version="7", weights_uri="s3://models/chat/x/",
                            weight_digest=DIGEST, reason="promote", serving=_serving(cluster))
    assert served["action"] == "rolled_stable" and served["version"] == "7"
    assert cluster.weights() == (100, 0)
    # The route moved only after the stable rollout finished: never to a half-rolled Deployment.
    assert cluster.calls == [("patch_deployment", "chat-stable"), ("patch_route", "chat")]
    [patch] = cluster.deployments["chat-stable"]["patches"]
    template = patch["spec"]["template"]
    assert template["metadata"]["annotations"][VERSION_ANNOTATION] == "7"
    assert template["metadata"]["annotations"][DIGEST_ANNOTATION] == DIGEST
    for section, name in (("initContainers", FETCH_CONTAINER), ("containers", SERVING_CONTAINER)):
        [container] = template["spec"][section]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert container["name"] == name
        assert env["LLMOPS_WEIGHT_DIGEST"] == DIGEST and env["LLMOPS_WEIGHTS_URI"] == "s3://models/chat/x/"
        assert env["LLMOPS_MODEL_DIR"].endswith(f"/chat/sha256-{DIGEST}")
    assert cluster.deployments["chat-canary"]["patches"] == []


def test_a_candidate_is_rolled_out_with_no_traffic() -> None:
    cluster = FakeCluster(canary_weight=30)  # a previous canary left weight behind
    serve_candidate(_gateway_settings(), "chat", version="8", weights_uri="s3://m/", weight_digest=DIGEST,
                    serving=_serving(cluster))
    assert cluster.calls == [("patch_route", "chat"), ("patch_deployment", "chat-canary")]
    assert cluster.weights() == (100, 0)


def test_a_rollout_that_never_finishes_is_an_error_naming_the_deployment() -> None:
    cluster = FakeCluster(rollout_reads=10**6)
    with pytest.raises(ServingRouteError, match=r"chat-stable not rolled out .*kubectl rollout status"):
        serve_champion(_gateway_settings(), "chat", version="7", weights_uri="s3://m/", weight_digest=DIGEST,
                       reason="rollback", serving=_serving(cluster, rollout_timeout_s=0.01))
    assert cluster.weights() == (100, 0) and cluster.calls == [("patch_deployment", "chat-stable")]


@pytest.mark.parametrize(("status", "done"), [
    ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, True),
    ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, False),  # stale
    ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}, False),  # old pod left
    ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}, False),  # not ready
    ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}, False),
])
def test_rolled_out_matches_kubectl_rollout_status(status: dict[str, int], done: bool) -> None:
    assert rolled_out({"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": status}) is done


def test_version_patch_changes_the_template_even_for_the_same_version() -> None:
    first = serve_version_patch(weights_uri="s3://m/", weight_digest=DIGEST, model_dir="/d", version="1",
                                reason="rollback")
    assert first["spec"]["template"]["metadata"]["annotations"]["llmops.io/rolled-for"].startswith("rollback ")


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
