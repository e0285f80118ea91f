"""The pure drift diff of the serving objects: each compared field, matching by name, and no
false positive on what the API server adds to an object it stores."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmops.serving.reconcile import (
    MISSING,
    Drift,
    diff_args,
    diff_serving,
    hardware_drift,
    parse_args,
    reconcile_verdict,
    same_quantity,
)

IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "5e" * 32
JOBS_IMAGE = "ghcr.io/llmops/jobs@sha256:" + "7a" * 32
DIGEST = "a" * 64
WEIGHTS = f"s3://llmops-models/models/tiny-chat/sha256-{DIGEST}/"
VLLM = "spec.template.spec.containers[vllm]"
FETCH = "spec.template.spec.initContainers[fetch-weights]"


def deployment(name: str = "tiny-chat-stable") -> dict[str, Any]:
    env = [{"name": "LLMOPS_WEIGHTS_URI", "value": WEIGHTS}, {"name": "LLMOPS_WEIGHT_DIGEST", "value": DIGEST},
           {"name": "LLMOPS_MODEL_DIR", "value": f"/models/tiny-chat/sha256-{DIGEST}"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "llmops", "labels": {"app.kubernetes.io/name": "tiny-chat"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"llmops.io/serving": name}},
            "template": {
                "metadata": {"labels": {"llmops.io/serving": name}},
                "spec": {
                    "initContainers": [{
                        "name": "fetch-weights", "image": JOBS_IMAGE,
                        "command": ["python", "-m", "llmops.jobs.fetch_weights"],
                        "args": ["--weights-uri", WEIGHTS, "--dest", f"/models/tiny-chat/sha256-{DIGEST}",
                                 "--weight-digest", DIGEST, "--full-verify"],
                        "env": [*copy.deepcopy(env), {"name": "AWS_ENDPOINT_URL", "value": ""},
                                {"name": "AWS_ACCESS_KEY_ID",
                                 "valueFrom": {"secretKeyRef": {"name": "llmops-s3", "key": "AWS_ACCESS_KEY_ID"}}}],
                    }],
                    "containers": [{
                        "name": "vllm", "image": IMAGE, "command": ["vllm", "serve"],
                        "args": ["$(LLMOPS_MODEL_DIR)", "--served-model-name", "tiny-chat", "--port", "8000",
                                 "--tensor-parallel-size", "1", "--max-model-len", "512", "--dtype", "float32"],
                        "env": [*copy.deepcopy(env), {"name": "HOME", "value": "/scratch/home"},
                                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"},
                                      "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}},
                        "ports": [{"name": "http", "containerPort": 8000}],
                    }, {
                        "name": "metrics", "image": JOBS_IMAGE, "command": ["python", "-m", "llmops.jobs.exporter"],
                    }],
                },
            },
        },
    }


def service(name: str = "tiny-chat-stable") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "llmops"},
            "spec": {"selector": {"llmops.io/serving": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8000}]}}


def route(stable: int = 100, canary: int = 0) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "tiny-chat", "namespace": "llmops"},
            "spec": {"parentRefs": [{"name": "llmops-gateway"}],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                "backendRefs": [{"name": "tiny-chat-stable", "port": 80, "weight": stable},
                                                {"name": "tiny-chat-canary", "port": 80, "weight": canary}]}]}}


def desired() -> list[dict[str, Any]]:
    return [deployment(), service(), route()]


def as_stored(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the API server writes it back: bookkeeping, status, defaults, canonical quantities."""
    stored = copy.deepcopy(obj)
    stored["metadata"].update({"uid": "0b6c7f0e", "resourceVersion": "48211", "generation": 7,
                               "creationTimestamp": "2026-11-30T10:00:00Z",
                               "managedFields": [{"manager": "llmops", "operation": "Apply"}],
                               "annotations": {"deployment.kubernetes.io/revision": "7"}})
    stored["status"] = {"observedGeneration": 7, "replicas": 2, "conditions": [{"type": "Available"}]}
    spec = stored["spec"]
    if stored["kind"] == "Deployment":
        spec.update({"revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}})
        pod = spec["template"]["spec"]
        pod.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                    "terminationGracePeriodSeconds": 30, "securityContext": {}})
        spec["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "2026-11-30T11:00:00Z"}
        spec["template"]["metadata"]["labels"]["pod-template-hash"] = "5d8f"
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            container.update({"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                              "terminationMessagePolicy": "File"})
            for port in container.get("ports", []):
                port["protocol"] = "TCP"
            for var in container.get("env", []):
                if var.get("value") == "":
                    del var["value"]  # omitempty
                ref = var.get("valueFrom", {}).get("fieldRef")
                if ref is not None:
                    ref["apiVersion"] = "v1"
            for group in container.get("resources", {}).values():
                for resource, value in group.items():
                    group[resource] = canonical(value)
    elif stored["kind"] == "Service":
        spec.update({"clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"], "type": "ClusterIP",
                     "sessionAffinity": "None", "ipFamilies": ["IPv4"], "internalTrafficPolicy": "Cluster"})
        for port in spec["ports"]:
            port["protocol"] = "TCP"
    elif stored["kind"] == "HTTPRoute":
        for parent in spec["parentRefs"]:
            parent.update({"group": "gateway.networking.k8s.io", "kind": "Gateway"})
        for rule in spec["rules"]:
            for ref in rule["backendRefs"]:
                ref.update({"group": "", "kind": "Service"})
        stored["status"] = {"parents": [{"conditions": [{"type": "Accepted", "status": "True"}]}]}
    return stored


def canonical(quantity: str) -> str:
    """The API server's canonical form of a quantity (``1000m`` -> ``1``, ``1024Mi`` -> ``1Gi``)."""
    text = str(quantity)
    if text.endswith("m") and text[:-1].isdigit() and int(text[:-1]) % 1000 == 0:
        return str(int(text[:-1]) // 1000)
    if text.endswith("Mi") and text[:-2].isdigit() and int(text[:-2]) % 1024 == 0:
        return f"{int(text[:-2]) // 1024}Gi"
    return text


def live_of(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any] | None]:
    return {(o["kind"], o["metadata"]["name"]): as_stored(o) for o in objects}


def only(drifts: list[Drift]) -> Drift:
    assert len(drifts) == 1, [d.line() for d in drifts]
    return drifts[0]


def edited(edit) -> dict[tuple[str, str], dict[str, Any] | None]:
    live = live_of(desired())
    edit(live)
    return live


def vllm(live) -> dict[str, Any]:
    return next(c for c in live[("Deployment", "tiny-chat-stable")]["spec"]["template"]["spec"]["containers"]
                if c["name"] == "vllm")


def fetch(live) -> dict[str, Any]:
    return live[("Deployment", "tiny-chat-stable")]["spec"]["template"]["spec"]["initContainers"][0]


# --- no false positives -----------------------------------------------------------------------

def test_objects_as_the_api_server_stores_them_are_no_drift() -> None:
    assert diff_serving(desired(), live_of(desired())) == []
    assert reconcile_verdict([])["status"] == "ok"


def test_reordered_containers_env_and_backend_refs_are_no_drift() -> None:
    def reorder(live):
        pod = live[("Deployment", "tiny-chat-stable")]["spec"]["template"]["spec"]
        pod["containers"].reverse()
        vllm(live)["env"].reverse()
        live[("HTTPRoute", "tiny-chat")]["spec"]["rules"][0]["backendRefs"].reverse()

    assert diff_serving(desired(), edited(reorder)) == []


def test_reordered_vllm_flags_are_no_drift() -> None:
    def reorder(live):
        vllm(live)["args"] = ["$(LLMOPS_MODEL_DIR)", "--dtype", "float32", "--max-model-len", "512",
                              "--tensor-parallel-size", "1", "--port", "8000", "--served-model-name", "tiny-chat"]

    assert diff_serving(desired(), edited(reorder)) == []


# --- each compared field ----------------------------------------------------------------------

def test_a_changed_vllm_image_names_the_container_and_both_images() -> None:
    other = IMAGE.replace("5e" * 32, "6f" * 32)

    def edit(live):
        vllm(live)["image"] = other

    drift = only(diff_serving(desired(), edited(edit)))
    assert (drift.kind, drift.name, drift.field) == ("Deployment", "tiny-chat-stable", f"{VLLM}.image")
    assert (drift.expected, drift.actual) == (IMAGE, other)
    line = drift.line()
    assert IMAGE in line and other in line and "fix:" in line  # digests shown whole, not cut


def test_a_changed_init_container_image_and_command() -> None:
    def edit(live):
        fetch(live)["image"] = "ghcr.io/llmops/jobs:latest"
        fetch(live)["command"] = ["sh", "-c", "true"]

    drifts = diff_serving(desired(), edited(edit))
    assert [d.field for d in drifts] == [f"{FETCH}.image", f"{FETCH}.command"]
    assert drifts[1].expected == ["python", "-m", "llmops.jobs.fetch_weights"]


def test_a_changed_vllm_flag_value_names_the_flag() -> None:
    def edit(live):
        args = vllm(live)["args"]
        args[args.index("--max-model-len") + 1] = "1024"

    drift = only(diff_serving(desired(), edited(edit)))
    assert drift.field == f"{VLLM}.args --max-model-len"
    assert (drift.expected, drift.actual) == ("--max-model-len 512", "--max-model-len 1024")


def test_an_added_and_a_removed_vllm_flag() -> None:
    def edit(live):
        args = vllm(live)["args"]
        i = args.index("--dtype")
        del args[i:i + 2]
        args.append("--enforce-eager")

    drifts = diff_serving(desired(), edited(edit))
    assert [(d.field, d.expected, d.actual) for d in drifts] == [
        (f"{VLLM}.args --dtype", "--dtype float32", MISSING),
        (f"{VLLM}.args --enforce-eager", MISSING, "--enforce-eager"),
    ]


def test_flag_equals_form_is_the_same_flag() -> None:
    def edit(live):
        args = vllm(live)["args"]
        i = args.index("--max-model-len")
        args[i:i + 2] = ["--max-model-len=512"]

    assert diff_serving(desired(), edited(edit)) == []


def test_a_changed_positional_argument() -> None:
    def edit(live):
        vllm(live)["args"][0] = "/models/other"

    drift = only(diff_serving(desired(), edited(edit)))
    assert (drift.field, drift.expected, drift.actual) == (f"{VLLM}.args[0]", "$(LLMOPS_MODEL_DIR)", "/models/other")


def test_init_container_flags_weights_uri_and_digest() -> None:
    def edit(live):
        args = fetch(live)["args"]
        args[args.index("--weight-digest") + 1] = "b" * 64
        args.remove("--full-verify")

    drifts = diff_serving(desired(), edited(edit))
    assert [d.field for d in drifts] == [f"{FETCH}.args --weight-digest", f"{FETCH}.args --full-verify"]
    assert drifts[0].actual == "--weight-digest " + "b" * 64


@pytest.mark.parametrize("container", ["vllm", "fetch-weights"])
def test_changed_weights_env_is_matched_by_name(container: str) -> None:
    other = "s3://llmops-models/models/tiny-chat/sha256-" + "b" * 64 + "/"

    def edit(live):
        target = vllm(live) if container == "vllm" else fetch(live)
        next(v for v in target["env"] if v["name"] == "LLMOPS_WEIGHTS_URI")["value"] = other

    drift = only(diff_serving(desired(), edited(edit)))
    path = VLLM if container == "vllm" else FETCH
    assert (drift.field, drift.expected, drift.actual) == (f"{path}.env[LLMOPS_WEIGHTS_URI]", WEIGHTS, other)


def test_removed_added_and_secret_changed_env() -> None:
    def edit(live):
        env = vllm(live)["env"]
        env[:] = [v for v in env if v["name"] != "LLMOPS_WEIGHT_DIGEST"]
        env.append({"name": "VLLM_ATTENTION_BACKEND", "value": "TORCH_SDPA"})
        secret = next(v for v in fetch(live)["env"] if v["name"] == "AWS_ACCESS_KEY_ID")
        secret["valueFrom"]["secretKeyRef"]["name"] = "someone-elses"

    drifts = diff_serving(desired(), edited(edit))
    assert [(d.field, d.expected, d.actual) for d in drifts[:1]] == [
        (f"{FETCH}.env[AWS_ACCESS_KEY_ID]",
         {"valueFrom": {"secretKeyRef": {"name": "llmops-s3", "key": "AWS_ACCESS_KEY_ID"}}},
         {"valueFrom": {"secretKeyRef": {"name": "someone-elses", "key": "AWS_ACCESS_KEY_ID"}}})]
    assert [(d.field, d.expected, d.actual) for d in drifts[1:]] == [
        (f"{VLLM}.env[LLMOPS_WEIGHT_DIGEST]", DIGEST, MISSING),
        (f"{VLLM}.env[VLLM_ATTENTION_BACKEND]", MISSING, "TORCH_SDPA"),
    ]


def test_an_empty_env_value_set_to_something() -> None:
    def edit(live):
        next(v for v in fetch(live)["env"] if v["name"] == "AWS_ENDPOINT_URL")["value"] = "http://elsewhere"

    drift = only(diff_serving(desired(), edited(edit)))
    assert (drift.field, drift.expected, drift.actual) == (f"{FETCH}.env[AWS_ENDPOINT_URL]", "", "http://elsewhere")


def test_resources_compared_by_value() -> None:
    def edit(live):
        resources = vllm(live)["resources"]
        resources["limits"]["memory"] = "8Gi"
        del resources["limits"]["nvidia.com/gpu"]
        resources["requests"]["ephemeral-storage"] = "10Gi"

    drifts = diff_serving(desired(), edited(edit))
    assert [(d.field, d.expected, d.actual) for d in drifts] == [
        (f"{VLLM}.resources.requests[ephemeral-storage]", MISSING, "10Gi"),
        (f"{VLLM}.resources.limits[memory]", "4Gi", "8Gi"),
        (f"{VLLM}.resources.limits[nvidia.com/gpu]", "1", MISSING),
    ]


def test_same_quantity() -> None:
    assert same_quantity("1000m", "1") and same_quantity("1024Mi", "1Gi") and same_quantity(2, "2")
    assert not same_quantity("1", "2") and not same_quantity("1G", "1Gi")
    assert same_quantity("weird", "weird") and not same_quantity("weird", "odd")


def test_replicas_and_their_default() -> None:
    def scale(live):
        live[("Deployment", "tiny-chat-stable")]["spec"]["replicas"] = 0

    drift = only(diff_serving(desired(), edited(scale)))
    assert (drift.field, drift.expected, drift.actual) == ("spec.replicas", 2, 0)

    one = deployment()
    one["spec"]["replicas"] = 1
    stored = as_stored(one)
    del stored["spec"]["replicas"]
    assert diff_serving([one], {("Deployment", "tiny-chat-stable"): stored}) == []


def test_a_missing_and_an_extra_container() -> None:
    def edit(live):
        pod = live[("Deployment", "tiny-chat-stable")]["spec"]["template"]["spec"]
        pod["containers"] = [c for c in pod["containers"] if c["name"] != "metrics"]
        pod["containers"].append({"name": "debug", "image": "busybox"})

    drifts = diff_serving(desired(), edited(edit))
    assert [(d.field, d.expected, d.actual) for d in drifts] == [
        ("spec.template.spec.containers[metrics]", "present", MISSING),
        ("spec.template.spec.containers[debug]", MISSING, "present"),
    ]


def test_a_changed_pod_template_label() -> None:
    def edit(live):
        live[("Deployment", "tiny-chat-stable")]["spec"]["template"]["metadata"]["labels"]["llmops.io/serving"] = "x"

    drift = only(diff_serving(desired(), edited(edit)))
    assert drift.field == "spec.template.metadata.labels[llmops.io/serving]"


def test_service_selector_and_ports() -> None:
    def edit(live):
        spec = live[("Service", "tiny-chat-stable")]["spec"]
        spec["selector"] = {"llmops.io/serving": "tiny-chat-canary"}
        spec["ports"][0]["targetPort"] = 9000

    drifts = diff_serving(desired(), edited(edit))
    assert [(d.kind, d.field) for d in drifts] == [("Service", "spec.selector"), ("Service", "spec.ports[http]")]


def test_route_weight_names_the_rule_and_backend() -> None:
    def edit(live):
        refs = live[("HTTPRoute", "tiny-chat")]["spec"]["rules"][0]["backendRefs"]
        refs[0]["weight"], refs[1]["weight"] = 90, 10

    drifts = diff_serving(desired(), edited(edit))
    assert [(d.kind, d.name, d.field, d.expected, d.actual) for d in drifts] == [
        ("HTTPRoute", "tiny-chat", "spec.rules[0].backendRefs[tiny-chat-stable].weight", 100, 90),
        ("HTTPRoute", "tiny-chat", "spec.rules[0].backendRefs[tiny-chat-canary].weight", 0, 10),
    ]


def test_route_weight_default_is_one() -> None:
    want = route()
    del want["spec"]["rules"][0]["backendRefs"][0]["weight"]
    live = as_stored(route(stable=1))
    assert diff_serving([want], {("HTTPRoute", "tiny-chat"): live}) == []
    drift = only(diff_serving([want], {("HTTPRoute", "tiny-chat"): as_stored(route(stable=100))}))
    assert (drift.expected, drift.actual) == (1, 100)


def test_route_backend_added_removed_rules_and_parents() -> None:
    def edit(live):
        spec = live[("HTTPRoute", "tiny-chat")]["spec"]
        refs = spec["rules"][0]["backendRefs"]
        refs[:] = [r for r in refs if r["name"] != "tiny-chat-canary"]
        refs.append({"name": "rogue", "port": 80, "weight": 5})

    drifts = diff_serving(desired(), edited(edit))
    assert [(d.field, d.actual) for d in drifts] == [
        ("spec.rules[0].backendRefs[tiny-chat-canary]", MISSING),
        ("spec.rules[0].backendRefs[rogue]", "weight 5"),
    ]

    def more(live):
        spec = live[("HTTPRoute", "tiny-chat")]["spec"]
        spec["rules"].append({"backendRefs": [{"name": "rogue"}]})
        spec["parentRefs"] = [{"name": "other-gateway"}]

    assert [d.field for d in diff_serving(desired(), edited(more))] == ["spec.parentRefs", "spec.rules"]


def test_missing_objects() -> None:
    live = live_of(desired())
    del live[("Service", "tiny-chat-stable")]
    live[("HTTPRoute", "tiny-chat")] = None
    drifts = diff_serving(desired(), live)
    assert [(d.object, d.field, d.actual) for d in drifts] == [
        ("Service/tiny-chat-stable", "(object)", MISSING), ("HTTPRoute/tiny-chat", "(object)", MISSING)]


def test_a_render_without_kind_or_name_is_refused() -> None:
    with pytest.raises(ValueError, match="kind and metadata.name"):
        diff_serving([{"kind": "Deployment", "metadata": {}}], {})


# --- args parsing -----------------------------------------------------------------------------

def test_parse_args() -> None:
    assert parse_args(["m", "--a", "1", "--b=2", "--eager", "-tp", "2", "--neg", "-1", "--last"]) == (
        ["m"], {"--a": ["1"], "--b": ["2"], "--eager": [None], "-tp": ["2"], "--neg": ["-1"], "--last": [None]})
    assert diff_args(["--x", "1", "--x", "2"], ["--x", "1"]) == [(" --x", "--x 1 --x 2", "--x 1")]
    assert diff_args(["a"], []) == [("[0]", "a", MISSING)]


# --- hardware and verdict ---------------------------------------------------------------------

def test_hardware_drift() -> None:
    assert hardware_drift("cpu-tiny", "c" * 64, "c" * 64, "include/hardware_configs/cpu-tiny.yaml") is None
    changed = hardware_drift("cpu-tiny", "c" * 64, "d" * 64, "include/hardware_configs/cpu-tiny.yaml")
    assert changed is not None and changed.field == "config_hash"
    assert "include/hardware_configs/cpu-tiny.yaml changed" in changed.line()
    unqualified = hardware_drift("h100x1", None, "d" * 64, "include/hardware_configs/h100x1.yaml")
    assert unqualified is not None and "not qualified on 'h100x1'" in unqualified.fix


def test_verdict_lists_every_drift_readably() -> None:
    def edit(live):
        vllm(live)["args"].append("--enforce-eager")
        live[("HTTPRoute", "tiny-chat")]["spec"]["rules"][0]["backendRefs"][1]["weight"] = 10

    verdict = reconcile_verdict(diff_serving(desired(), edited(edit)))
    assert verdict["status"] == "drifted" and verdict["drifts"] == 2
    assert verdict["objects"] == ["Deployment/tiny-chat-stable", "HTTPRoute/tiny-chat"]
    assert verdict["reasons"][0] == (
        f"Deployment/tiny-chat-stable {VLLM}.args --enforce-eager: expected <missing>, live \"--enforce-eager\"; "
        "fix: re-apply the pinned render (trigger serving_reconcile with reapply=true)")


# --- the project's own render -----------------------------------------------------------------

@pytest.mark.parametrize("hw_name", ["cpu", "h100x1", "b200x4"])
def test_the_real_render_as_stored_is_no_drift_and_an_edit_is(hw_name: str) -> None:
    """What :mod:`llmops.serving.render` renders, read back as the API server stores it, is no drift
    (its valueFrom secrets, named target ports, backend filters and parentRefs included)."""
    from pathlib import Path

    from llmops.config import settings as settings_mod
    from llmops.core.deployment import DeploymentManifest
    from llmops.core.hardware import load_hardware_class
    from llmops.serving.render import render_route, render_serving

    root = Path(__file__).resolve().parents[2]
    hw = load_hardware_class(hw_name, root / "include" / "hardware_configs")
    conf = settings_mod.load({"LLMOPS_LAUNCHER": "kubernetes",
                              "LLMOPS_JOBS_IMAGE": JOBS_IMAGE, "LLMOPS_VLLM_IMAGE": IMAGE})
    manifest = DeploymentManifest(
        model_name="tiny-chat", weight_digest=DIGEST, weights_uri=WEIGHTS, runtime_image=IMAGE,
        runtime_version="0.11.0", hardware_configs={hw.name: hw.config_hash}, tokenizer_hash="b" * 64,
        chat_template_hash="c" * 64, created_at="2026-11-30T10:00:00+00:00", model_version="3")
    rendered = [*render_serving(manifest, hw, conf, role="stable"), render_route("tiny-chat", conf)]
    live = live_of(rendered)
    assert diff_serving(rendered, live) == []

    args = vllm(live)["args"]
    args[args.index("--max-model-len") + 1] = "1"
    drift = only(diff_serving(rendered, live))
    assert drift.field == f"{VLLM}.args --max-model-len" and drift.actual == "--max-model-len 1"


# --- reconcile_io: the pinned render from S3, the local store, reapply ---------------------------

@pytest.fixture
def pinned_world(tmp_path):
    """A models bucket (moto) where version 3 of tiny-chat serves, and an empty local store."""
    from pathlib import Path

    import boto3
    from moto import mock_aws

    from llmops.config import settings as settings_mod
    from llmops.core.hardware import load_hardware_class
    from llmops.io import s3 as s3io
    from llmops.serving.objects import LocalServingObjects

    root = Path(__file__).resolve().parents[2]
    conf = settings_mod.load({"LLMOPS_JOBS_IMAGE": JOBS_IMAGE, "LLMOPS_VLLM_IMAGE": IMAGE,
                              "LLMOPS_HARDWARE_CONFIGS_DIR": str(root / "include" / "hardware_configs")})
    hw = load_hardware_class(conf.default_hardware_class, conf.hardware_configs_dir)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="llmops-models")

        def publish(hardware_configs: dict[str, str] | None = None, model_version: str = "3") -> None:
            from llmops.core.deployment import DeploymentManifest

            manifest = DeploymentManifest(
                model_name="tiny-chat", weight_digest=DIGEST, weights_uri=WEIGHTS, runtime_image=IMAGE,
                runtime_version="0.11.0", hardware_configs=hardware_configs or {hw.name: hw.config_hash},
                tokenizer_hash="b" * 64, chat_template_hash="c" * 64, created_at="2026-11-30T10:00:00+00:00",
                model_version=model_version)
            _, key = s3io.parse_s3_uri(WEIGHTS + "deployment.json")
            s3io.write_json(s3, "llmops-models", key, manifest.to_dict())
            s3io.write_json(s3, "llmops-models", "deployments/tiny-chat/current.json",
                            {"model": "tiny-chat", "version": "3", "weights_uri": WEIGHTS, "history": []})

        yield {"s3": s3, "conf": conf, "hw": hw, "publish": publish,
               "store": LocalServingObjects(tmp_path / "serving" / "llmops")}


def _reconcile(world, *, reapply: bool = False, busy: str | None = None) -> dict[str, Any]:
    from llmops.serving.reconcile_io import reconcile_model

    return reconcile_model(world["conf"], "tiny-chat", s3=world["s3"], bucket="llmops-models", store=world["store"],
                           reapply_render=reapply, busy=busy)


def test_models_with_current_lists_only_serving_records(pinned_world) -> None:
    from llmops.io import s3 as s3io
    from llmops.serving.reconcile_io import models_with_current

    s3 = pinned_world["s3"]
    for key in ("deployments/a/current.json", "deployments/a/history/2026-promote.json",
                "deployments/b/rollbacks/run.json", "deployments/c/current.json", "deployments/current.json"):
        s3io.write_json(s3, "llmops-models", key, {})
    assert models_with_current(s3, "llmops-models") == ["a", "c"]


def test_an_empty_store_drifts_and_reapply_converges(pinned_world) -> None:
    from llmops.serving.reconcile_io import ServingDrift, check_reports

    pinned_world["publish"]()
    report = _reconcile(pinned_world)
    assert report["status"] == "drifted" and report["version"] == "3"
    assert [f["field"] for f in report["findings"]] == ["(object)"] * 3
    with pytest.raises(ServingDrift, match=r"tiny-chat: Deployment/tiny-chat-stable \(object\)"):
        check_reports([report])

    repaired = _reconcile(pinned_world, reapply=True)
    assert (repaired["status"], repaired["drifts_before"]) == ("ok", 3)
    assert check_reports([repaired, _reconcile(pinned_world)]) == {"status": "ok", "models": {"tiny-chat": "ok"}}


def test_a_changed_hardware_config_is_a_finding_and_blocks_reapply(pinned_world) -> None:
    hw = pinned_world["hw"]
    pinned_world["publish"]({hw.name: "d" * 64})
    report = _reconcile(pinned_world)
    assert report["findings"][0]["kind"] == "HardwareClass" and report["findings"][0]["field"] == "config_hash"
    assert f"{hw.name}.yaml changed since the serving version was qualified" in report["reasons"][0]

    refused = _reconcile(pinned_world, reapply=True)
    assert refused["status"] == "error" and "not re-applied" in refused["reasons"][0]
    assert pinned_world["store"].get("Deployment", "tiny-chat-stable") is None  # nothing applied


def test_a_class_the_version_was_never_qualified_on(pinned_world) -> None:
    pinned_world["publish"]({"some-other-class": "d" * 64})
    report = _reconcile(pinned_world)
    assert report["status"] == "drifted" and [f["kind"] for f in report["findings"]] == ["HardwareClass"]
    assert "not rendered" in report["notes"][0]


def test_unreadable_pins_are_errors_naming_the_object(pinned_world) -> None:
    report = _reconcile(pinned_world)
    assert report["status"] == "error"
    assert "s3://llmops-models/deployments/tiny-chat/current.json: no such object" in report["reasons"][0]

    pinned_world["publish"](model_version="4")
    report = _reconcile(pinned_world)
    assert report["status"] == "error" and "model_version '4' but" in report["reasons"][0]

    pinned_world["s3"].delete_object(Bucket="llmops-models", Key=WEIGHTS.removeprefix("s3://llmops-models/")
                                     + "deployment.json")
    report = _reconcile(pinned_world)
    assert "deployment.json: no such object" in report["reasons"][0] and "fix: re-stage" in report["reasons"][0]


def test_a_model_under_refresh_is_skipped(pinned_world) -> None:
    from llmops.serving.reconcile_io import check_reports

    report = _reconcile(pinned_world, busy="model_refresh run r1 holds the model's lease")
    assert report["status"] == "skipped"
    assert check_reports([report])["models"] == {"tiny-chat": "skipped"}
