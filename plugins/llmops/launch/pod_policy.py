"""What every pod the kubernetes launcher renders must satisfy: pinned images (the provider's
XCom sidecar too, memory-limited), the restricted security identity, GPU resource name, probe
and start-up budgets.

Pure (no Kubernetes client): both the parse-time operator (:mod:`.kubernetes`) and the
execute-time pod builder (:mod:`.kubernetes_pod`) read it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llmops.config.images import image_repository, is_pinned_by_digest
from llmops.config.kubernetes import FS_GROUP as FS_GROUP  # the restricted identity, shared with serving
from llmops.config.kubernetes import KUBERNETES_CONN_ID
from llmops.config.kubernetes import MODEL_CACHE_CLAIM as MODEL_CACHE_CLAIM  # the claim ``model_cache`` volumes mount
from llmops.config.kubernetes import RUN_AS_GROUP as RUN_AS_GROUP
from llmops.config.kubernetes import RUN_AS_USER as RUN_AS_USER
from llmops.core.podjob import PodJobError

IMAGE_PULL_MARGIN_S = 600
"""Time allowed for pulling images before sidecar start-up: a CUDA vLLM image is ~10 GB."""

READINESS_FAILURE_THRESHOLD = 3
GPU_RESOURCE = "nvidia.com/gpu"
XCOM_VOLUME = "xcom"  # added by KubernetesPodOperator for do_xcom_push; not available to jobs
XCOM_SIDECAR_CONTAINER = "airflow-xcom-sidecar"
"""The container the KubernetesPodOperator adds beside ``base`` when it pushes XCom (its
image and resources come from the connection's ``xcom_sidecar_container_*`` extras)."""

_DEFAULT_STARTUP_TIMEOUT_S = 120
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")


class UnpinnedImageError(PodJobError):
    """An image is not pinned by digest; the message names the container, image and setting."""


class XComSidecarError(PodJobError):
    """The provider's XCom sidecar is unpinned or unbounded; the message names the connection extra."""


def refuse_unpinned_images(job: Mapping[str, Any], image_settings: Mapping[str, str],
                           *, skip_templated: bool = False) -> None:
    """Raise :class:`UnpinnedImageError` for the first container image not pinned by digest.

    ``job`` is the dict form; ``image_settings`` maps an image repository to the setting that
    chooses it (``LLMOPS_VLLM_IMAGE``...). ``skip_templated`` leaves images that hold Jinja
    for the check after rendering.
    """
    for container in (*job.get("init_containers", ()), *job.get("sidecars", ()), job["main"]):
        image = str(container.get("image", ""))
        if is_pinned_by_digest(image) or (skip_templated and "{{" in image):
            continue
        repo = image_repository(image)
        setting = image_settings.get(repo) or (
            "LLMOPS_VLLM_IMAGE" if tuple(container.get("command", ()))[:1] == ("vllm",) else "LLMOPS_JOBS_IMAGE"
        )
        raise UnpinnedImageError(
            f"pod job {job.get('name')!r}, container {container.get('name')!r}: image {image!r} is not "
            f"pinned by digest; the kubernetes launcher runs only repo@sha256:<64 hex> images. "
            f"Set {setting}={repo}@sha256:<digest> (the digest of the tested image, e.g. from "
            f"`docker buildx imagetools inspect {image}`)"
        )


def refuse_unsafe_xcom_sidecar(pod: Mapping[str, Any], conn_id: str = KUBERNETES_CONN_ID) -> None:
    """Raise :class:`XComSidecarError` when ``pod`` (a camelCase manifest) has an XCom sidecar
    whose image is not pinned by digest or that has no memory limit.

    The KubernetesPodOperator adds that container itself, from the connection ``conn_id``'s
    extras ``xcom_sidecar_container_image`` (default: a mutable ``alpine`` tag) and
    ``xcom_sidecar_container_resources`` (default: requests only), so the pod job cannot pin it:
    the connection must. A pod without the sidecar (no XCom push) passes.
    """
    name = f"pod {pod.get('metadata', {}).get('name')!r}"
    for container in pod.get("spec", {}).get("containers") or ():
        if container.get("name") != XCOM_SIDECAR_CONTAINER:
            continue
        image = str(container.get("image") or "")
        if not is_pinned_by_digest(image):
            raise XComSidecarError(
                f"{name}, container {XCOM_SIDECAR_CONTAINER!r}: image {image!r} is not pinned by digest. "
                f"Set the extra xcom_sidecar_container_image of the Airflow connection {conn_id!r} to "
                f"repo:tag@sha256:<64 hex> (airflow_settings.yaml has one: docker.io/library/alpine:<tag>@sha256:...)")
        limits = (container.get("resources") or {}).get("limits") or {}
        if not limits.get("memory"):
            raise XComSidecarError(
                f"{name}, container {XCOM_SIDECAR_CONTAINER!r}: no memory limit. Set the extra "
                f"xcom_sidecar_container_resources of the Airflow connection {conn_id!r} to a JSON string "
                'with a memory limit, e.g. {"requests": {"cpu": "10m", "memory": "16Mi"}, '
                '"limits": {"cpu": "100m", "memory": "32Mi"}} (as in airflow_settings.yaml)')


def startup_timeout_s(job: Mapping[str, Any]) -> int:
    """Seconds the operator waits for the pod to leave ``Pending``.

    With native sidecars the pod stays ``Pending`` until every sidecar's startup probe passes,
    so the KubernetesPodOperator's default of 120 s would fail a task whose vLLM is still
    loading weights. Budget: image pulls plus each sidecar's whole startup-probe window.
    """
    budget = IMAGE_PULL_MARGIN_S
    for sidecar in job.get("sidecars", ()):
        probe = sidecar.get("readiness_probe")
        if not probe:
            continue
        try:
            budget += int(probe.get("initial_delay_s", 0)) + int(probe.get("period_s", 2)) * int(
                probe.get("failure_threshold", 150))
        except (TypeError, ValueError):  # a templated value: render-time numbers are unknown here
            budget += 900
    return max(budget, _DEFAULT_STARTUP_TIMEOUT_S)
