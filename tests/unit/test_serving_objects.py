"""Where serving objects live: server-side apply through the Kubernetes API (against a fake of the
API server that records each request: there is no cluster here) and the embedded default's local store."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from llmops.config import settings as settings_mod
from llmops.serving.objects import (
    APPLY_CONTENT_TYPE,
    FIELD_MANAGER,
    KubernetesServingObjects,
    LocalServingObjects,
    ServingRouteError,
    rolled_out,
    serving_objects,
)


class FakeApiServer:
    """``AppsV1Api``, ``CoreV1Api`` and ``CustomObjectsApi`` in one object: the calls the project makes.

    A server-side apply stores the body as the live object (this project is the only manager here,
    so the merge is the body) and records it in :attr:`applied`; a Deployment then reports its
    rollout done after ``rollout_reads`` status reads. A merge patch of an HTTPRoute (the canary
    router's) replaces its spec. Every request is logged in :attr:`calls`.
    """

    def __init__(self, *, rollout_reads: int = 1, gateway_accepts_after: int | None = None) -> None:
        # gateway_accepts_after: a Gateway controller reports each route generation Accepted after
        # that many reads (None: no controller reports a status at all).
        self.gateway_accepts_after = gateway_accepts_after
        self.route_reads: dict[str, int] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []
        self.apply_kwargs: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, str]] = []
        self.rollout_reads = rollout_reads
        self.reads_left: dict[str, int] = {}

    # -- server-side apply ----------------------------------------------------------------------
    def _apply(self, kind: str, name: str, namespace: str, body: dict[str, Any], kwargs: dict[str, Any]) -> dict:
        if kwargs.get("_content_type") != APPLY_CONTENT_TYPE:
            return self._merge(kind, name, body, kwargs)
        assert body["kind"] == kind and body["metadata"]["name"] == name and body["metadata"]["namespace"] == namespace
        self.calls.append(("apply", kind, name))
        self.applied.append(copy.deepcopy(body))
        self.apply_kwargs.append(dict(kwargs))
        live = copy.deepcopy(body)
        old = self.objects.get((kind, name))
        generation = (old or {}).get("metadata", {}).get("generation", 0)
        changed = old is None or old.get("spec") != live.get("spec")
        live["metadata"]["generation"] = generation + (1 if changed else 0)
        if kind == "Deployment":
            replicas = live["spec"].get("replicas", 1)
            live["status"] = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": 0,
                              "availableReplicas": 0}
            self.reads_left[name] = self.rollout_reads
        if kind == "HTTPRoute" and self.gateway_accepts_after is not None:
            live["status"] = {"parents": [{"parentRef": {"name": "llmops-gateway"}, "conditions": [
                {"type": "Accepted", "status": "True", "observedGeneration": generation}]}]}
            self.route_reads[name] = 0
        self.objects[(kind, name)] = live
        return copy.deepcopy(live)

    def _merge(self, kind: str, name: str, body: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("merge_patch", kind, name))
        self.apply_kwargs.append(dict(kwargs))
        live = self.objects[(kind, name)]
        live["spec"] = {**live["spec"], **copy.deepcopy(body["spec"])}
        live["metadata"]["generation"] += 1
        return copy.deepcopy(live)

    def patch_namespaced_deployment(self, name: str, namespace: str, body: dict[str, Any], **kw: Any) -> dict:
        return self._apply("Deployment", name, namespace, body, kw)

    def patch_namespaced_service(self, name: str, namespace: str, body: dict[str, Any], **kw: Any) -> dict:
        return self._apply("Service", name, namespace, body, kw)

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                       body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        assert (group, version, plural) == ("gateway.networking.k8s.io", "v1", "httproutes")
        return self._apply("HTTPRoute", name, namespace, body, kw)

    # -- reads ----------------------------------------------------------------------------------
    def _read(self, kind: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", kind, name))
        if (kind, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[(kind, name)])

    def read_namespaced_deployment(self, name: str, namespace: str) -> dict[str, Any]:
        return self._read("Deployment", name)

    def read_namespaced_service(self, name: str, namespace: str) -> dict[str, Any]:
        return self._read("Service", name)

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                     name: str) -> dict[str, Any]:
        live = self.objects.get(("HTTPRoute", name))
        if live is not None and self.gateway_accepts_after is not None:
            self.route_reads[name] = self.route_reads.get(name, 0) + 1
            if self.route_reads[name] >= self.gateway_accepts_after:
                live["status"]["parents"][0]["conditions"][0]["observedGeneration"] = live["metadata"]["generation"]
        return self._read("HTTPRoute", name)

    def read_namespaced_deployment_status(self, name: str, namespace: str) -> dict[str, Any]:
        self.calls.append(("status", "Deployment", name))
        live = self.objects[("Deployment", name)]
        if self.reads_left.get(name, 0) > 0:
            self.reads_left[name] -= 1
        else:
            replicas = live["spec"].get("replicas", 1)
            live["status"] = {"observedGeneration": live["metadata"]["generation"], "replicas": replicas,
                              "updatedReplicas": replicas, "availableReplicas": replicas}
        return copy.deepcopy(live)

    def store(self, namespace: str = "llmops", **kwargs: Any) -> KubernetesServingObjects:
        """Serving objects on this fake (no waiting between status reads)."""
        return KubernetesServingObjects(namespace, apps_api=self, core_api=self, custom_api=self, poll_s=0.0,
                                        **kwargs)


def _deployment(name: str = "chat-stable") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "llmops"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "vllm", "image": "x@sha256:" + "0" * 64}]}}}}


def _service(name: str = "chat-stable") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "llmops"},
            "spec": {"selector": {"app": name}, "ports": [{"port": 8000}]}}


def _route(name: str = "chat") -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "llmops"}, "spec": {"rules": []}}


def test_kubernetes_apply_is_a_forced_server_side_apply_by_llmops_for_each_kind() -> None:
    api = FakeApiServer()
    store = api.store()
    for obj in (_deployment(), _service(), _route()):
        stored = store.apply(obj)
        assert stored["metadata"]["name"] == obj["metadata"]["name"]
    # An applied route is read back once: no Gateway reports a status here, so the stored spec is all.
    assert [(c[1], c[2]) for c in api.calls] == [("Deployment", "chat-stable"), ("Service", "chat-stable"),
                                                 ("HTTPRoute", "chat"), ("HTTPRoute", "chat")]
    assert api.applied == [_deployment(), _service(), _route()]  # the bodies exactly as rendered
    assert all(kw == {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY_CONTENT_TYPE}
               for kw in api.apply_kwargs)
    assert FIELD_MANAGER == "llmops"


def test_kubernetes_get_reads_the_live_object_or_none() -> None:
    api = FakeApiServer()
    store = api.store()
    assert store.get("Deployment", "chat-stable") is None
    assert store.get("Service", "chat-stable") is None
    assert store.get("HTTPRoute", "chat") is None
    store.apply(_service())
    assert store.get("Service", "chat-stable")["spec"]["ports"] == [{"port": 8000}]


def test_kubernetes_get_passes_on_errors_other_than_not_found() -> None:
    class Forbidden(FakeApiServer):
        def read_namespaced_deployment(self, name: str, namespace: str) -> dict[str, Any]:
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException):
        Forbidden().store().get("Deployment", "chat-stable")


def test_wait_rolled_out_polls_until_the_controller_caught_up() -> None:
    api = FakeApiServer(rollout_reads=3)
    store = api.store()
    store.apply(_deployment())
    assert store.wait_rolled_out("chat-stable") >= 0
    assert [c for c in api.calls if c[0] == "status"] == [("status", "Deployment", "chat-stable")] * 4


def test_a_rollout_that_never_finishes_names_the_deployment_and_the_command() -> None:
    api = FakeApiServer(rollout_reads=10**6)
    store = api.store(rollout_timeout_s=0.0)
    store.apply(_deployment())
    with pytest.raises(ServingRouteError, match=r"llmops/chat-stable not rolled out .*kubectl rollout status"):
        store.wait_rolled_out("chat-stable")


@pytest.mark.parametrize(("kind", "name"), [("ConfigMap", "x"), ("Deployment", "../etc"), ("Service", "A")])
def test_unknown_kinds_and_bad_names_are_refused(tmp_path: Path, kind: str, name: str) -> None:
    for store in (FakeApiServer().store(), LocalServingObjects(tmp_path)):
        with pytest.raises(ServingRouteError, match="fix:"):
            store.get(kind, name)


def test_local_store_holds_exactly_the_applied_object(tmp_path: Path) -> None:
    store = LocalServingObjects(tmp_path)
    assert store.get("Deployment", "chat-stable") is None
    first = _deployment()
    assert store.apply(first) == first
    second = copy.deepcopy(first)
    second["spec"]["replicas"] = 2
    store.apply(second)
    path = tmp_path / "Deployment" / "chat-stable.json"
    assert json.loads(path.read_text()) == second == store.get("Deployment", "chat-stable")
    assert sorted(p.name for p in path.parent.iterdir()) == ["chat-stable.json"]  # no temporary left
    assert store.wait_rolled_out("chat-stable") == 0.0


def test_local_store_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalServingObjects(tmp_path)
    store.apply(_service())

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("llmops.serving.objects.os.replace", broken_replace)
    changed = _service()
    changed["spec"]["ports"] = [{"port": 9000}]
    with pytest.raises(OSError, match="disk full"):
        store.apply(changed)
    assert store.get("Service", "chat-stable") == _service()  # the old object, whole
    assert sorted(p.name for p in (tmp_path / "Service").iterdir()) == ["chat-stable.json"]


def test_the_mode_picks_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = serving_objects(settings_mod.load({"LLMOPS_DATA_DIR": str(tmp_path), "LLMOPS_K8S_NAMESPACE": "team"}))
    assert isinstance(local, LocalServingObjects) and local.root == tmp_path / "serving" / "team"
    built: list[str] = []
    for name in ("apps_api", "core_api", "custom_objects_api"):
        monkeypatch.setattr(f"llmops.io.kube.{name}", lambda name=name: built.append(name) or FakeApiServer())
    cluster = serving_objects(settings_mod.load({"LLMOPS_LAUNCHER": "kubernetes"}))
    assert isinstance(cluster, KubernetesServingObjects) and cluster.namespace == "llmops"
    assert built == ["apps_api", "core_api", "custom_objects_api"]


@pytest.mark.parametrize(("status", "done"), [
    ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, True),
    ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, False),  # stale
    ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}, False),  # old pod left
    ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}, False),  # not ready
    ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}, False),
])
def test_rolled_out_matches_kubectl_rollout_status(status: dict[str, int], done: bool) -> None:
    assert rolled_out({"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": status}) is done


def test_a_route_is_applied_once_the_gateway_accepted_its_generation() -> None:
    from llmops.serving.render import render_route

    api = FakeApiServer(gateway_accepts_after=3)
    store = api.store()
    route = render_route("chat", settings_mod.load({"LLMOPS_LAUNCHER": "kubernetes"}))
    store.apply(route)
    assert api.calls[0] == ("apply", "HTTPRoute", "chat")
    assert api.calls[1:] == [("get", "HTTPRoute", "chat")] * 3  # polled until Accepted for this generation


def test_a_route_the_gateway_never_accepts_is_an_error_naming_the_command() -> None:
    from llmops.serving.objects import KubernetesServingObjects, ServingRouteError
    from llmops.serving.render import render_route

    api = FakeApiServer(gateway_accepts_after=10**6)
    store = KubernetesServingObjects("llmops", apps_api=api, core_api=api, custom_api=api, poll_s=0.0,
                                     route_confirm_timeout_s=0.0)
    with pytest.raises(ServingRouteError, match=r"generation 1 not accepted.*kubectl describe httproute chat"):
        store.apply(render_route("chat", settings_mod.load({"LLMOPS_LAUNCHER": "kubernetes"})))
