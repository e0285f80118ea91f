"""The ``kubernetes`` launcher: a pod job as a ``KubernetesPodOperator`` pod.

The operator carries the pod job as a templated dict (``PodJob.to_dict()``). Airflow renders
Jinja anywhere in it before the task runs; only then is the pod built from it, so
``{{ params.model }}`` or ``{{ ti.xcom_pull(...) }}`` in an arg reaches the pod rendered, and
the rendered job is validated again (``PodJob.from_dict``).

What the pod gets from the job:

* the main container is KPO's ``base`` container (its logs are the task log, its exit code the
  task's result, ``/airflow/xcom/return.json`` its XCom);
* sidecars are native sidecars: init containers with ``restartPolicy: Always`` and a
  startupProbe (the kubelet starts ``base`` only once it passes) plus a readinessProbe, both
  HTTP GET on the port named by the probe;
* every pod port is an env var in every container, so ``$(VLLM_PORT)`` in commands, args and
  env values is left for the kubelet to expand;
* GPUs are requested and limited as ``nvidia.com/gpu``; node selector and tolerations come
  from the hardware class; ``model_cache`` is a PVC, ``shm`` a memory-backed emptyDir with a
  size limit, ``scratch`` an emptyDir; ``secret_env`` is ``valueFrom.secretKeyRef``;
* every container runs with the ``restricted`` Pod Security Standard's securityContext.

Images must be pinned by digest: what ran must be exactly what was tested, and a tag can move
under a deployment. The launcher refuses anything else, naming the setting to change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from llmops.config import settings as settings_mod
from llmops.core.podjob import (
    Container,
    PodJob,
    PodJobError,
    Probe,
    Resources,
    Volume,
    image_repository,
    is_pinned_by_digest,
)

MODEL_CACHE_CLAIM = "llmops-model-cache"
"""PersistentVolumeClaim mounted for ``model_cache`` volumes (operator argument ``model_cache_claim``)."""

RUN_AS_USER = 1000
RUN_AS_GROUP = 1000
FS_GROUP = 1000

IMAGE_PULL_MARGIN_S = 600
"""Time allowed for pulling images before sidecar start-up: a CUDA vLLM image is ~10 GB."""

READINESS_FAILURE_THRESHOLD = 3
GPU_RESOURCE = "nvidia.com/gpu"
XCOM_VOLUME = "xcom"  # added by KubernetesPodOperator for do_xcom_push; not available to jobs

_DEFAULT_STARTUP_TIMEOUT_S = 120
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")


class UnpinnedImageError(PodJobError):
    """An image is not pinned by digest; the message names the container, image and setting."""


def container_security_context() -> k8s.V1SecurityContext:
    """The ``restricted`` Pod Security Standard, for every container (the xcom sidecar too)."""
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def pod_security_context() -> k8s.V1PodSecurityContext:
    """Pod-level securityContext: a fixed non-root user, group-writable volumes."""
    return k8s.V1PodSecurityContext(
        # runAsNonRoot alone makes the kubelet refuse images whose USER is root (the vLLM and
        # alpine images are); a fixed uid runs them as non-root instead.
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_GROUP,
        fs_group=FS_GROUP,
        # Re-chowning a model cache of hundreds of GB on every pod start takes minutes.
        fs_group_change_policy="OnRootMismatch",
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


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


class PodJobKubernetesOperator(KubernetesPodOperator):
    """A ``KubernetesPodOperator`` whose pod is built from a (templated) pod job dict.

    ``pod_job`` is ``PodJob.to_dict()``. The KPO attributes (image, cmds, arguments, env_vars,
    init_containers, volumes, node_selector, tolerations, ...) are set from the *rendered* job
    in :meth:`build_pod_request_obj`, so they are never rendered twice. Defaults that the pod
    job contract implies (namespace and service account from settings, XCom push, security
    contexts, start-up timeout) can be overridden by keyword.
    """

    template_fields: Sequence[str] = ("pod_job", *KubernetesPodOperator.template_fields)
    template_fields_renderers = {**KubernetesPodOperator.template_fields_renderers, "pod_job": "json"}
    ui_color = "#e8f4fd"

    def __init__(self, *, pod_job: dict[str, Any], model_cache_claim: str = MODEL_CACHE_CLAIM,
                 **kwargs: Any) -> None:
        settings = settings_mod.load()
        kwargs.setdefault("namespace", settings.namespace)
        kwargs.setdefault("service_account_name", settings.service_account)
        # Jobs talk to MLflow and S3, not to the Kubernetes API (XCom is read by exec from
        # the worker), so the pod gets no API token unless a task asks for one.
        kwargs.setdefault("automount_service_account_token", False)
        kwargs.setdefault("do_xcom_push", True)
        kwargs.setdefault("security_context", pod_security_context())
        kwargs.setdefault("container_security_context", container_security_context())
        kwargs.setdefault("xcom_sidecar_container_security_context", container_security_context())
        kwargs.setdefault("startup_timeout_seconds", startup_timeout_s(pod_job))
        # A crash without a termination message still shows its last log lines in the error.
        kwargs.setdefault("termination_message_policy", "FallbackToLogsOnError")
        super().__init__(**kwargs)
        self.pod_job = pod_job
        self.model_cache_claim = model_cache_claim
        self.image_settings = {
            image_repository(settings.jobs_image): "LLMOPS_JOBS_IMAGE",
            image_repository(settings.vllm_image): "LLMOPS_VLLM_IMAGE",
        }
        # Fail at DAG parse time where the image is known then; templated images are checked
        # again once rendered.
        refuse_unpinned_images(pod_job, self.image_settings, skip_templated=True)

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """Build the pod from the rendered pod job, then let the KPO add XCom, labels and hooks."""
        refuse_unpinned_images(self.pod_job, self.image_settings)
        job = PodJob.from_dict(self.pod_job)
        self._apply_pod_job(job)
        return super().build_pod_request_obj(context, dry_run=dry_run)

    def _apply_pod_job(self, job: PodJob) -> None:
        volumes = [_volume(v, self.model_cache_claim) for v in job.volumes]
        mounts = [k8s.V1VolumeMount(name=v.name, mount_path=v.mount_path) for v in job.volumes]
        self.name = job.name
        self.image = job.main.image
        self.cmds = list(job.main.command)
        self.arguments = list(job.main.args)
        self.env_vars = _env(job.main, job.ports)
        self.container_resources = _resources(job.main.resources)
        # A readiness probe on the main container is not used: it is a job, awaited to exit.
        self.ports = _container_ports(job.main, job.ports)
        self.volumes = volumes
        self.volume_mounts = mounts
        # Plain init containers run to completion first, in order; native sidecars start after them.
        self.init_containers = [
            *(_init_container(c, job.ports, mounts) for c in job.init_containers),
            *(_native_sidecar(c, job.ports, mounts) for c in job.sidecars),
        ]
        if job.kubernetes_api:
            self.automount_service_account_token = True
        self.node_selector = dict(job.scheduling.node_selector)
        self.tolerations = [
            k8s.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
            for t in job.scheduling.tolerations
        ]
        self.labels = {**self.labels, **job.labels}
        self.active_deadline_seconds = job.timeout_s


def _env(container: Container, ports: Mapping[str, int]) -> list[k8s.V1EnvVar]:
    # The kubelet expands $(VAR) in an env value only from variables defined *earlier* in
    # the list: ports first, then secrets, then plain values (which may refer to both).
    own = {*container.env, *container.secret_env}
    env = [k8s.V1EnvVar(name=name, value=str(port)) for name, port in ports.items() if name not in own]
    env += [
        k8s.V1EnvVar(name=name, value_from=k8s.V1EnvVarSource(
            secret_key_ref=k8s.V1SecretKeySelector(name=ref.secret, key=ref.key)))
        for name, ref in container.secret_env.items()
    ]
    env += [k8s.V1EnvVar(name=name, value=value) for name, value in container.env.items()]
    return env


def _resources(resources: Resources) -> k8s.V1ResourceRequirements:
    # Memory limit = request: a GPU server that swaps or gets OOM-killed late is worse than
    # one refused up front. No CPU limit: CFS throttling shows up as token-latency spikes.
    requests = {"cpu": resources.cpu, "memory": resources.memory}
    limits = {"memory": resources.memory}
    if resources.gpus:
        # Extended resources must be requested and limited alike.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(resources.gpus)
    return k8s.V1ResourceRequirements(requests=requests, limits=limits)


def _container_ports(container: Container, ports: Mapping[str, int]) -> list[k8s.V1ContainerPort]:
    """Declare the port a container is probed on (documentation for Services and policies)."""
    probe = container.readiness_probe
    if probe is None:
        return []
    name = probe.port_env.lower().replace("_", "-")
    return [k8s.V1ContainerPort(container_port=ports[probe.port_env], protocol="TCP",
                                name=name if _PORT_NAME.match(name) and "--" not in name else None)]


def _http_probe(probe: Probe, port: int, *, startup: bool) -> k8s.V1Probe:
    action = k8s.V1HTTPGetAction(path=probe.path, port=port)
    if startup:
        # The whole start-up window (loading weights) is the startup probe's; the kubelet
        # starts the main container only when it succeeds.
        return k8s.V1Probe(http_get=action, initial_delay_seconds=probe.initial_delay_s,
                           period_seconds=probe.period_s, timeout_seconds=probe.timeout_s,
                           failure_threshold=probe.failure_threshold)
    # After start-up a few failed checks are enough to take the server out of readiness.
    return k8s.V1Probe(http_get=action, period_seconds=max(probe.period_s, 5), timeout_seconds=probe.timeout_s,
                       failure_threshold=READINESS_FAILURE_THRESHOLD)


def _native_sidecar(container: Container, ports: Mapping[str, int],
                    mounts: list[k8s.V1VolumeMount]) -> k8s.V1Container:
    probe = container.readiness_probe
    port = ports[probe.port_env] if probe else None
    sidecar = _init_container(container, ports, mounts)
    sidecar.ports = _container_ports(container, ports)
    # restartPolicy Always on an init container is what makes it a native sidecar: it
    # starts before the main container, keeps running beside it and is stopped after it.
    sidecar.restart_policy = "Always"
    if probe and port:
        sidecar.startup_probe = _http_probe(probe, port, startup=True)
        sidecar.readiness_probe = _http_probe(probe, port, startup=False)
    return sidecar


def _init_container(container: Container, ports: Mapping[str, int],
                    mounts: list[k8s.V1VolumeMount]) -> k8s.V1Container:
    return k8s.V1Container(
        name=container.name,
        image=container.image,
        command=list(container.command),
        args=list(container.args),
        env=_env(container, ports),
        resources=_resources(container.resources),
        volume_mounts=list(mounts),
        security_context=container_security_context(),
        termination_message_policy="FallbackToLogsOnError",
    )


def _volume(volume: Volume, model_cache_claim: str) -> k8s.V1Volume:
    if not _DNS_LABEL.match(volume.name) or volume.name == XCOM_VOLUME:
        raise PodJobError(f"volume {volume.name!r}: a Kubernetes volume name must be a DNS label "
                          f"other than {XCOM_VOLUME!r} (reserved for the result volume)")
    if volume.kind == "model_cache":
        return k8s.V1Volume(name=volume.name, persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=model_cache_claim))
    if volume.kind == "shm":
        # Memory-backed, and charged to the container's memory limit up to size_limit.
        return k8s.V1Volume(name=volume.name, empty_dir=k8s.V1EmptyDirVolumeSource(
            medium="Memory", size_limit=volume.size_limit))
    return k8s.V1Volume(name=volume.name, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=volume.size_limit))


def render_pod_manifest(operator: PodJobKubernetesOperator,
                        context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pod ``operator`` would create, as a camelCase manifest dict, without a cluster.

    With ``context`` (at least ``params``, or a full task context) the template fields are
    rendered first, as Airflow does before ``execute``; rendering is in place and final.
    """
    if context is not None:
        operator.render_template_fields(dict(context))  # type: ignore[arg-type]
    # Task-instance labels need a real task instance; a test context has none.
    ti_context = context if context is not None and "ti" in context else None
    pod = operator.build_pod_request_obj(ti_context, dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


def make_kubernetes_task(pod_job: PodJob, task_id: str, **operator_kwargs: Any) -> PodJobKubernetesOperator:
    """The Airflow task running ``pod_job`` on Kubernetes (``operator_kwargs`` go to the operator)."""
    pod_job.validate()
    return PodJobKubernetesOperator(task_id=task_id, pod_job=pod_job.to_dict(), **operator_kwargs)
