"""The serving objects rendered from a version's pins: valid Kubernetes objects (validated offline
against the 1.28 schema, the project's minimum), an HTTPRoute valid against the Gateway API's v1
schema, and a document that depends on the pins alone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from llmops.config import settings as settings_mod
from llmops.config.kubernetes import KUBERNETES_MIN_VERSION
from llmops.core.deployment import DeploymentManifest
from llmops.core.hardware import HardwareClass, config_path, load_hardware_class
from llmops.serving.gateway_router import httproute_weights_patch, route_weights
from llmops.serving.render import (
    DIGEST_ANNOTATION,
    GATEWAY_NAME,
    HARDWARE_HASH_ANNOTATION,
    MODEL_CACHE_CLAIM,
    RUNTIME_IMAGE_ANNOTATION,
    VERSION_ANNOTATION,
    RenderError,
    check_hardware_pin,
    object_name,
    render_role,
    render_route,
    render_serving,
    serving_document,
)
from llmops.serving.vllm_args import VllmArgsError

ROOT = Path(__file__).resolve().parents[2]
CLASSES = sorted(p.stem for p in (ROOT / "include" / "hardware_configs").glob("*.yaml"))
IMAGE_A = "registry.example.com/vllm/vllm-openai@sha256:" + "a1" * 32
IMAGE_B = "docker.io/vllm/vllm-openai@sha256:" + "b2" * 32
DIGEST = "ab" * 32
HTTPROUTE_SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "gateway-api" / "httproute-v1.schema.json").read_text())
RESTRICTED = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
              "seccompProfile": {"type": "RuntimeDefault"}}


def settings(**environ: str) -> settings_mod.Settings:
    """Settings with pinned images (the kubernetes launcher's production shape) plus ``environ``."""
    return settings_mod.load({"LLMOPS_LAUNCHER": "kubernetes",
                              "LLMOPS_JOBS_IMAGE": "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "d4" * 32,
                              "LLMOPS_VLLM_IMAGE": IMAGE_B, **environ})


def hardware(name: str) -> HardwareClass:
    return load_hardware_class(name, ROOT / "include" / "hardware_configs")


def manifest(hw: HardwareClass, *, model: str = "chat", version: str = "7", image: str = IMAGE_A,
             created_at: str = "2026-11-30T10:00:00+00:00", **changes: Any) -> DeploymentManifest:
    """A registered version's deployment manifest pinned to ``hw``'s current config."""
    return DeploymentManifest(model_name=model, weight_digest=DIGEST, weights_uri=f"s3://llmops-models/models/"
                              f"{model}/sha256-{DIGEST}/", runtime_image=image, runtime_version="0.11.0",
                              hardware_configs={hw.name: hw.config_hash}, tokenizer_hash="cd" * 32,
                              chat_template_hash="ef" * 32, created_at=created_at, model_version=version, **changes)


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


@pytest.mark.parametrize("hw_name", CLASSES)
@pytest.mark.parametrize("role", ["stable", "canary"])
def test_deployment_and_service_are_valid_kubernetes_objects(hw_name: str, role: str) -> None:
    hw = hardware(hw_name)
    extra = ["--max-model-len", "16"] if role == "canary" else []
    objects = render_serving(manifest(hw), hw, settings(), role=role, extra_vllm_args=extra)
    assert [obj["kind"] for obj in objects] == ["Deployment", "Service"]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_MIN_VERSION, strict=True)
        assert obj["metadata"] == {**obj["metadata"], "name": f"chat-{role}", "namespace": "llmops"}


@pytest.mark.parametrize("percent", [0, 5, 50, 100])
def test_route_is_a_valid_httproute_splitting_stable_and_canary(percent: int) -> None:
    route = render_route("chat", settings(), canary_percent=percent)
    jsonschema.validate(route, HTTPROUTE_SCHEMA)
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": GATEWAY_NAME}]
    assert route_weights(route, stable_service="chat-stable", canary_service="chat-canary") == (100 - percent, percent)
    [rule] = route["spec"]["rules"]
    headers = [ref["filters"][0]["responseHeaderModifier"]["set"][0] for ref in rule["backendRefs"]]
    assert headers == [{"name": "X-Llmops-Backend", "value": "stable"}, {"name": "X-Llmops-Backend", "value": "canary"}]
    # The canary router can move the weights of the rendered route as it is.
    patch = httproute_weights_patch(route, stable_service="chat-stable", canary_service="chat-canary",
                                    canary_percent=30)
    assert [ref["weight"] for ref in patch["spec"]["rules"][0]["backendRefs"]] == [70, 30]


def test_route_matches_the_model_hostname_when_the_gateway_url_names_the_model() -> None:
    shared = render_route("chat", settings())
    assert "hostnames" not in shared["spec"]
    per_model = render_route("tiny-chat", settings(LLMOPS_GATEWAY_URL="https://{model}.llm.example.com:8443/"))
    jsonschema.validate(per_model, HTTPROUTE_SCHEMA)
    assert per_model["spec"]["hostnames"] == ["tiny-chat.llm.example.com"]


def test_route_schema_refuses_what_the_api_server_would() -> None:
    route = render_route("chat", settings())
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1_000_001
    with pytest.raises(jsonschema.ValidationError, match="1000001"):
        jsonschema.validate(route, HTTPROUTE_SCHEMA)


@pytest.mark.parametrize("vllm_image", [IMAGE_B, "docker.io/vllm/vllm-openai:latest", ""])
def test_the_pinned_runtime_image_is_served_whatever_llmops_vllm_image_says(vllm_image: str) -> None:
    hw = hardware("h100x1")
    conf = settings(LLMOPS_VLLM_IMAGE=vllm_image)
    deployment = _by_kind(render_serving(manifest(hw, image=IMAGE_A), hw, conf, role="stable"))["Deployment"]
    [vllm] = deployment["spec"]["template"]["spec"]["containers"]
    assert vllm["image"] == IMAGE_A
    assert deployment["spec"]["template"]["metadata"]["annotations"][RUNTIME_IMAGE_ANNOTATION] == IMAGE_A
    assert IMAGE_B not in serving_document(render_role(manifest(hw), hw, conf, role="stable"))


def test_canary_extra_flags_reach_the_canary_deployment_only() -> None:
    hw = hardware("h100x1")
    extra = ["--max-model-len", "16", "--enforce-eager", "--tokenizer-pool-size=$(AWS_SECRET_ACCESS_KEY)"]
    canary = _by_kind(render_serving(manifest(hw), hw, settings(), role="canary", extra_vllm_args=extra))
    stable = _by_kind(render_serving(manifest(hw), hw, settings(), role="stable"))
    canary_args = canary["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    stable_args = stable["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert canary_args[canary_args.index("--max-model-len") + 1] == "16"
    assert canary_args.count("--max-model-len") == 1  # replaced, not repeated
    assert "--enforce-eager" in canary_args
    at = canary_args.index("--tokenizer-pool-size")
    assert canary_args[at + 1] == "$$(AWS_SECRET_ACCESS_KEY)"  # a literal: the kubelet never expands it
    assert stable_args[stable_args.index("--max-model-len") + 1] == str(hw.vllm.max_model_len)
    assert "--enforce-eager" not in stable_args
    assert stable_args == hw.vllm_serve_args(f"/models/chat/sha256-{DIGEST}", "chat", port_ref="$(VLLM_PORT)")


def test_canary_flags_replace_both_spellings_and_managed_flags_are_refused() -> None:
    hw = load_hardware_class("cpu", ROOT / "include" / "hardware_configs")
    extra = ["--max-model-len=16", "--enforce-eager", "--seed", "7"]
    canary = _by_kind(render_serving(manifest(hw), hw, settings(), role="canary", extra_vllm_args=extra))
    args = canary["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args.count("--max-model-len") == 1 and args[args.index("--max-model-len") + 1] == "16"
    assert args[-2:] == ["--seed", "7"]
    for flag in (["--served-model-name", "x"], ["--port=1"], ["--tensor-parallel-size", "2"], ["16"]):
        with pytest.raises(VllmArgsError):
            render_serving(manifest(hw), hw, settings(), role="canary", extra_vllm_args=flag)


@pytest.mark.parametrize("hw_name", ["cpu", "h100x1", "b200x4"])
def test_the_pod_follows_the_class_and_the_restricted_standard(hw_name: str) -> None:
    hw = hardware(hw_name)
    conf = settings()
    deployment, service = render_serving(manifest(hw), hw, conf, role="stable")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [fetch], [vllm] = pod["initContainers"], pod["containers"]
    for container in (fetch, vllm):
        assert container["securityContext"] == RESTRICTED
    # vLLM: the class's resources and scheduling, probes on /health, caches under scratch.
    requests, limits = vllm["resources"]["requests"], vllm["resources"]["limits"]
    assert (requests["cpu"], requests["memory"], limits["memory"]) == (hw.resources.cpu, hw.resources.memory,
                                                                        hw.resources.memory)
    if hw.gpu.count:
        assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"] == str(hw.gpu.count)
    else:
        assert "nvidia.com/gpu" not in limits
    assert pod.get("nodeSelector", {}) == hw.node_selector
    assert pod.get("tolerations", []) == [t.model_dump(exclude_none=True) for t in hw.tolerations]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["VLLM_PORT"] == "8000" and env["HOME"].startswith("/scratch/")
    assert {k: v for k, v in env.items() if k in hw.vllm.env} == hw.vllm.env
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": MODEL_CACHE_CLAIM}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": hw.resources.shm_size}
    assert {m["mountPath"] for m in vllm["volumeMounts"]} == {"/models", "/dev/shm", "/scratch"}
    # The init container re-verifies the pinned digest before vLLM starts, with the S3 Secret.
    assert fetch["image"] == conf.jobs_image
    assert fetch["command"] == ["python", "-m", "llmops.jobs.fetch_weights"]
    assert fetch["args"][fetch["args"].index("--weight-digest") + 1] == DIGEST and "--full-verify" in fetch["args"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in fetch["env"] if "valueFrom" in e}
    assert secrets == dict.fromkeys(("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), "llmops-s3")
    # What serves is named on the objects.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[VERSION_ANNOTATION] == "7" and annotations[DIGEST_ANNOTATION] == DIGEST
    assert annotations[HARDWARE_HASH_ANNOTATION] == hw.config_hash
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_document_is_a_function_of_the_pins_alone() -> None:
    hw = hardware("h100x1")
    first = serving_document(render_role(manifest(hw), hw, settings(), role="stable"))
    # Another day, another default image, another manifest timestamp: the same bytes.
    again = serving_document(render_role(manifest(hw, created_at="2026-12-01T06:00:00+00:00"), hw,
                                         settings(LLMOPS_VLLM_IMAGE="docker.io/vllm/vllm-openai:v9"), role="stable"))
    assert again == first
    assert "2026-11-30" not in first
    document = json.loads(first)
    assert document["kind"] == "List" and [o["kind"] for o in document["items"]] == ["Deployment", "Service",
                                                                                     "HTTPRoute"]
    assert first == json.dumps(document, sort_keys=True, indent=2) + "\n"
    # Any pin changes it.
    assert serving_document(render_role(manifest(hw, version="8"), hw, settings(), role="stable")) != first


def test_the_canary_route_is_applied_before_its_deployment_and_the_stable_route_after() -> None:
    hw = hardware("cpu")
    assert [o["kind"] for o in render_role(manifest(hw), hw, settings(), role="canary")] == [
        "HTTPRoute", "Deployment", "Service"]
    assert [o["kind"] for o in render_role(manifest(hw), hw, settings(), role="stable")] == [
        "Deployment", "Service", "HTTPRoute"]


def test_a_changed_hardware_config_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    hw = hardware("h100x1")
    pinned = manifest(hw)
    check_hardware_pin(pinned, hw, config_path("h100x1", ROOT / "include" / "hardware_configs"))
    changed = hw.model_copy(update={"vllm": hw.vllm.model_copy(update={"max_num_seqs": 128})})
    file = config_path("h100x1", ROOT / "include" / "hardware_configs")
    with pytest.raises(RenderError) as refused:
        check_hardware_pin(pinned, changed, file)
    message = str(refused.value)
    assert "include/hardware_configs/h100x1.yaml: config hash" in message
    assert hw.config_hash in message and changed.config_hash in message
    assert "check out the commit whose include/hardware_configs/h100x1.yaml has hash" in message
    with pytest.raises(RenderError, match=r"no entry for class 'cpu'.*fix: serve it on one of those classes"):
        check_hardware_pin(pinned, hardware("cpu"), tmp_path / "cpu.yaml")


def test_names_that_cannot_be_kubernetes_names_are_refused() -> None:
    assert object_name("tiny-chat", "canary") == "tiny-chat-canary"
    for model in ("Tiny_Chat", "x" * 60, "1chat"):
        with pytest.raises(RenderError, match="fix: register the model under such a name"):
            object_name(model, "stable")
    with pytest.raises(RenderError, match="fix: use one of stable, canary"):
        object_name("chat", "blue")


def test_an_unregistered_manifest_is_refused() -> None:
    hw = hardware("cpu")
    unregistered = replace(manifest(hw), model_version=None)
    with pytest.raises(RenderError, match="model_version is not set; fix: serve the deployment.json of a registered"):
        render_serving(unregistered, hw, settings(), role="stable")
