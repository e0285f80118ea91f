"""The serving objects of a model version, rendered from what the version pins.

A served version is a ``Deployment`` and a ``Service`` named ``<model>-<role>`` (role ``stable``:
the champion, ``canary``: a candidate during a canary) and, per model, an ``HTTPRoute``
``<model>`` that splits the Gateway's traffic between the two Services. They are rendered from
the version's :class:`~llmops.core.deployment.DeploymentManifest` (runtime image pinned by
digest, weights URI and digest) and its :class:`~llmops.core.hardware.HardwareClass` (GPUs,
vLLM knobs, ``/dev/shm``, node selector, tolerations), and nothing else but
:class:`~llmops.config.settings.Settings` (namespace, jobs image, service account, gateway URL):
never the ``LLMOPS_VLLM_IMAGE`` of the day, never a timestamp or a run id. So the render is a
pure function, and :func:`serving_document` of it is byte-for-byte reproducible from a clean
clone (``python -m llmops.reproduce``).

The pod follows the launcher's conventions (:mod:`llmops.serving.vllm`): ``vllm serve`` on
``$(VLLM_PORT)`` with the class's args and env, caches under the scratch volume, the model
cache claim at ``/models``, a memory-backed ``/dev/shm``; the ``fetch-weights`` init container
(:func:`llmops.serving.weights.fetch_container`) re-verifies the weight digest before vLLM
starts; every container runs under the ``restricted`` Pod Security Standard, with no API token.

Pure: plain dicts (camelCase, as the API server reads them); no Kubernetes client, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmops.config.kubernetes import FS_GROUP, MODEL_CACHE_CLAIM, RUN_AS_GROUP, RUN_AS_USER
from llmops.config.settings import Settings
from llmops.core.deployment import DeploymentManifest
from llmops.core.hardware import HardwareClass, hardware_pin_problem
from llmops.core.podjob import Container
from llmops.serving.gateway_router import FIELD_MANAGER, GATEWAY_GROUP, GATEWAY_VERSION, backend_filter
from llmops.serving.routers import CANARY, STABLE, check_percent
from llmops.serving.vllm import (
    DEFAULT_VLLM_PORT,
    HARDWARE_CLASS_LABEL,
    HEALTH_PATH,
    MODEL_CACHE_MOUNT,
    PROBE_PERIOD_S,
    SCRATCH_MOUNT,
    SHM_MOUNT,
    VLLM_CONTAINER,
    VLLM_PORT_ENV,
    vllm_sidecar,
    vllm_startup_budget_s,
)
from llmops.serving.vllm_args import managed_flags, override_args
from llmops.serving.weights import S3_SECRET, fetch_container, model_dir

ROLES = (STABLE, CANARY)
GATEWAY_NAME = "llmops-gateway"
"""The Gateway every model's HTTPRoute attaches to, in the serving namespace."""


REPLICAS = 1
SERVICE_PORT = DEFAULT_VLLM_PORT
PORT_NAME = "http"
GPU_RESOURCE = "nvidia.com/gpu"
READINESS_PERIOD_S = 5
READINESS_FAILURE_THRESHOLD = 3
LIVENESS_PERIOD_S = 10
LIVENESS_FAILURE_THRESHOLD = 3

MODEL_LABEL = "llmops.io/model"
ROLE_LABEL = "llmops.io/role"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = FIELD_MANAGER
VERSION_ANNOTATION = "llmops.io/model-version"
DIGEST_ANNOTATION = "llmops.io/weight-digest"
RUNTIME_IMAGE_ANNOTATION = "llmops.io/runtime-image"
HARDWARE_CLASS_ANNOTATION = "llmops.io/hardware-class"
HARDWARE_HASH_ANNOTATION = "llmops.io/hardware-config-hash"

# A Service name is an RFC 1035 label: the strictest of the three objects' name rules.
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 63
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class RenderError(ValueError):
    """The serving objects cannot be rendered; the message names the input, the field and the fix."""


def object_name(model: str, role: str) -> str:
    """``<model>-<role>``: the Deployment and Service serving ``model`` as ``role``."""
    if role not in ROLES:
        raise RenderError(f"role {role!r} is not a serving role; fix: use one of {', '.join(ROLES)}")
    name = f"{model}-{role}"
    if not _DNS_1035.match(name) or len(name) > _MAX_NAME or not _LABEL_VALUE.match(model):
        raise RenderError(f"model {model!r}: {name!r} is not a Kubernetes Service name (lowercase letters, digits "
                          f"and '-', starting with a letter, at most {_MAX_NAME} characters); fix: register the "
                          f"model under such a name (at most {_MAX_NAME - len('-canary')} characters)")
    return name


def render_serving(manifest: DeploymentManifest, hw: HardwareClass, settings: Settings, *, role: str,
                   extra_vllm_args: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``[Deployment, Service]`` serving ``manifest``'s version on ``hw`` as ``role``.

    ``extra_vllm_args`` (the canary's ``canary_vllm_args``) are checked against the flags the
    platform manages (:func:`llmops.serving.vllm_args.managed_flags`, the embedded canary pod's
    allowlist: a managed flag raises :class:`~llmops.serving.vllm_args.VllmArgsError`); each
    ``--flag [value]`` replaces the same flag of the class's args or is appended, as a literal.
    Raises :class:`RenderError` for a manifest without a model version or a model name that
    cannot name Kubernetes objects.
    """
    name = object_name(manifest.model_name, role)
    if not manifest.model_version:
        raise RenderError(f"deployment manifest of {manifest.model_name!r}: model_version is not set; fix: serve "
                          f"the deployment.json of a registered version (the stage job writes it beside the weights)")
    labels = {MODEL_LABEL: manifest.model_name, ROLE_LABEL: role}
    annotations = {
        VERSION_ANNOTATION: manifest.model_version,
        DIGEST_ANNOTATION: manifest.weight_digest,
        RUNTIME_IMAGE_ANNOTATION: manifest.runtime_image,
        HARDWARE_CLASS_ANNOTATION: hw.name,
        HARDWARE_HASH_ANNOTATION: hw.config_hash,
    }
    return [_deployment(manifest, hw, settings, name, labels, annotations, extra_vllm_args),
            _service(settings, name, labels, annotations)]


def check_hardware_pin(manifest: DeploymentManifest, hw: HardwareClass, config_file: str | Path) -> None:
    """Refuse (:class:`RenderError`) to serve ``manifest`` on ``hw`` unless ``hw``'s config hashes to
    the manifest's pin for that class (:func:`llmops.core.hardware.hardware_pin_problem`): what
    serves must be what was qualified. ``config_file`` is the class's YAML, named with the fix.
    """
    problem = hardware_pin_problem(manifest.hardware_configs, hw, config_file)
    if problem:
        raise RenderError(f"deployment manifest of {manifest.model_name!r} version {manifest.model_version}: {problem}")


def render_route(model: str, settings: Settings, *, canary_percent: int = 0) -> dict[str, Any]:
    """The ``HTTPRoute`` ``<model>``: the Gateway's traffic to ``<model>-stable`` (``100 - canary_percent``)
    and ``<model>-canary`` (``canary_percent``), each response naming its backend (``X-Llmops-Backend``).

    When the gateway URL template names the model (``https://{model}.example.com``), the route
    matches that hostname only; otherwise the Gateway's listener decides which routes it serves.
    """
    percent = check_percent(canary_percent)
    stable, canary = object_name(model, STABLE), object_name(model, CANARY)
    spec: dict[str, Any] = {
        "parentRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": GATEWAY_NAME}],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                {"name": stable, "port": SERVICE_PORT, "weight": 100 - percent, "filters": [backend_filter(STABLE)]},
                {"name": canary, "port": SERVICE_PORT, "weight": percent, "filters": [backend_filter(CANARY)]},
            ],
        }],
    }
    if "{model}" in settings.gateway_url_template:
        url = settings.gateway_url_template.format(model=model, namespace=settings.namespace)
        host = urlsplit(url).hostname
        if host:
            spec["hostnames"] = [host]
    return {
        "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}", "kind": "HTTPRoute",
        "metadata": {"name": model, "namespace": settings.namespace,
                     "labels": {MODEL_LABEL: model, MANAGED_BY_LABEL: MANAGER}},
        "spec": spec,
    }


def render_role(manifest: DeploymentManifest, hw: HardwareClass, settings: Settings, *, role: str,
                extra_vllm_args: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Everything applied, in order, when ``role`` is served: the :func:`render_serving` objects
    and the model's route at 0% canary, after them for ``stable`` (a new champion takes all the
    traffic once rolled out), before them for ``canary`` (no request reaches a candidate before
    the canary controller moves the weights)."""
    objects = render_serving(manifest, hw, settings, role=role, extra_vllm_args=extra_vllm_args)
    route = render_route(manifest.model_name, settings, canary_percent=0)
    return [*objects, route] if role == STABLE else [route, *objects]


def serving_document(objects: list[dict[str, Any]]) -> str:
    """THE canonical text of rendered objects: a Kubernetes ``List`` as JSON, keys sorted, 2-space
    indent, ASCII, one trailing newline (``kubectl apply --server-side -f`` reads it as it is).

    Stored beside the version's ``deployment.json``, logged to MLflow and printed by
    ``python -m llmops.reproduce``: the same objects give the same bytes.
    """
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)},
                      sort_keys=True, indent=2, ensure_ascii=True) + "\n"


def _deployment(manifest: DeploymentManifest, hw: HardwareClass, settings: Settings, name: str,
                labels: dict[str, str], annotations: dict[str, str],
                extra_vllm_args: Sequence[str]) -> dict[str, Any]:
    path = model_dir(manifest.model_name, manifest.weight_digest)
    vllm = vllm_sidecar(hw, path, manifest.model_name, manifest.runtime_image)
    fetch = fetch_container(settings, {"weights_uri": manifest.weights_uri,
                                       "weight_digest": manifest.weight_digest}, manifest.model_name, None)
    mounts = [{"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT}, {"name": "shm", "mountPath": SHM_MOUNT},
              {"name": "scratch", "mountPath": SCRATCH_MOUNT}]
    budget = vllm_startup_budget_s(hw)
    http = {"path": HEALTH_PATH, "port": PORT_NAME}
    serving = {
        **_container(vllm, mounts),
        # The canary's flags, refused on the same allowlist as the embedded canary pod's.
        "args": list(override_args(vllm.args, extra_vllm_args, managed=managed_flags(vllm.args, hw),
                                   source="canary_vllm_args")),
        "ports": [{"name": PORT_NAME, "containerPort": SERVICE_PORT, "protocol": "TCP"}],
        # Loading weights, profiling memory and capturing CUDA graphs take minutes: the startup
        # probe holds the other two back until /health first answers.
        "startupProbe": {"httpGet": http, "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 2,
                         "failureThreshold": max(1, -(-budget // PROBE_PERIOD_S))},
        "readinessProbe": {"httpGet": http, "periodSeconds": READINESS_PERIOD_S, "timeoutSeconds": 2,
                           "failureThreshold": READINESS_FAILURE_THRESHOLD},
        "livenessProbe": {"httpGet": http, "periodSeconds": LIVENESS_PERIOD_S, "timeoutSeconds": 5,
                          "failureThreshold": LIVENESS_FAILURE_THRESHOLD},
    }
    init = _container(fetch, mounts[:1])
    # No Airflow connection to template from: the endpoint is the S3 Secret's (absent: AWS S3).
    init["env"] = [{"name": "AWS_ENDPOINT_URL", "valueFrom": {"secretKeyRef": {
        "name": S3_SECRET, "key": "AWS_ENDPOINT_URL", "optional": True}}},
        *(e for e in init["env"] if e["name"] != "AWS_ENDPOINT_URL")]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "serviceAccountName": settings.service_account,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_GROUP,
                            "fsGroup": FS_GROUP, "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [init],
        "containers": [serving],
        "volumes": [
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": MODEL_CACHE_CLAIM}},
            # NCCL and vLLM's workers exchange tensors through /dev/shm (charged to the memory limit).
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": hw.resources.shm_size}},
            {"name": "scratch", "emptyDir": {}},
        ],
    }
    if hw.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(hw.node_selector.items()))
    if hw.tolerations:
        pod_spec["tolerations"] = [{k: v for k, v in t.model_dump().items() if v is not None}
                                   for t in hw.tolerations]
    pod_labels = {**labels, HARDWARE_CLASS_LABEL: hw.name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": settings.namespace,
                     "labels": {**pod_labels, MANAGED_BY_LABEL: MANAGER}, "annotations": annotations},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels},
            # The new pod is ready (weights verified and loaded) before the old one goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": pod_labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def _service(settings: Settings, name: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": settings.namespace,
                     "labels": {**labels, MANAGED_BY_LABEL: MANAGER}, "annotations": annotations},
        "spec": {"type": "ClusterIP", "selector": labels,
                 "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}]},
    }


def _container(container: Container, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """A pod-job container as a Kubernetes container: env (ports first, then secrets, then values, so
    ``$(VAR)`` references resolve), resources, mounts and the ``restricted`` securityContext."""
    env: list[dict[str, Any]] = []
    if container.name == VLLM_CONTAINER and VLLM_PORT_ENV not in container.env:
        env.append({"name": VLLM_PORT_ENV, "value": str(SERVICE_PORT)})
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}}
            for key, ref in container.secret_env.items()]
    env += [{"name": key, "value": value} for key, value in container.env.items()]
    res = container.resources
    # Memory limit = request (no late OOM kill); no CPU limit (throttling shows as latency spikes);
    # GPUs requested and limited alike, as extended resources must be.
    requests: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, str] = {"memory": res.memory}
    if res.gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(res.gpus)
    return {
        "name": container.name, "image": container.image, "command": list(container.command),
        "args": list(container.args), "env": env,
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": list(mounts),
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
