"""The pod side of the ``kubernetes`` launcher: the ``KubernetesPodOperator`` and the pod it creates.

Imported only when a task runs (or a pod is rendered): the provider's pod machinery and the
Kubernetes client cost about 2.4 s to import, which a DAG file must not pay at parse time.
:class:`llmops.launch.kubernetes.PodJobKubernetesOperator` (cheap, what DAG files build) calls
:func:`build_pod_operator` from ``execute``; see that module for what the pod gets from the job.

The operator built is a :class:`PodJobPodOperator`, a ``KubernetesPodOperator`` that keeps to the
pod-job contract on the way out:

* a verdict (the main container exited with ``VERDICT_EXIT_CODE``) fails the task with
  ``AirflowFailException``, never retried; any other failure stays a retryable
  ``AirflowException``. The job's ``return.json`` is pushed either way (the KPO's own behaviour);
* the XCom sidecar the KPO adds to the pod it is about to create must be pinned by digest and
  memory-limited (the ``kubernetes_default`` connection's ``xcom_sidecar_container_*`` extras
  set it); otherwise the pod is not created (:func:`llmops.launch.pod_policy.refuse_unsafe_xcom_sidecar`).
  A dry run (rendering for inspection) builds it as configured and leaves the verdict to the
  caller;
* secrets: the worker does not know the values of the Kubernetes Secrets a pod reads (they reach
  the pod as ``secretKeyRef`` only), so it redacts what it can know, every value Airflow's secrets
  masker holds (connection passwords, sensitive variables, ``mask_secret``), from the
  ``return.json`` XCom and the failure message (which carries the pod's last log lines). Pod log
  lines go to the task log through Airflow's logging, which masks the same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from llmops.core.podjob import VERDICT_EXIT_CODE, Container, PodJob, PodJobError, Probe, Resources, Volume
from llmops.launch.pod_policy import (
    _DNS_LABEL,
    _PORT_NAME,
    FS_GROUP,
    GPU_RESOURCE,
    READINESS_FAILURE_THRESHOLD,
    RUN_AS_GROUP,
    RUN_AS_USER,
    XCOM_VOLUME,
    refuse_unpinned_images,
    refuse_unsafe_xcom_sidecar,
    startup_timeout_s,
)
from llmops.launch.redact import airflow_text_redactor, redact_data, redact_exception


class PodJobPodOperator(KubernetesPodOperator):
    """The ``KubernetesPodOperator`` of a pod job: a verdict exit is not retried, and the XCom
    and failure message are redacted against the secrets Airflow knows (see the module docstring)."""

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """The KPO's pod; one that is to be created must have a pinned, memory-limited XCom sidecar.

        Both the synchronous and the deferrable ``execute`` build the pod here before creating it.
        """
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        if not dry_run:
            refuse_unsafe_xcom_sidecar(manifest(pod), self.kubernetes_conn_id)
        return pod

    def extract_xcom(self, pod: k8s.V1Pod, **kwargs: Any) -> Any:
        """``return.json`` as the KPO reads it, every string in it (dict keys too) redacted."""
        return redact_data(super().extract_xcom(pod, **kwargs), airflow_text_redactor())

    def cleanup(self, pod: k8s.V1Pod, remote_pod: k8s.V1Pod, xcom_result: dict | None = None,
                context: Any = None) -> None:
        """The KPO's cleanup (it pushes the XCom of a failed pod, then raises); its failure made a
        verdict when the main container exited with ``VERDICT_EXIT_CODE``, and redacted."""
        try:
            super().cleanup(pod=pod, remote_pod=remote_pod, xcom_result=xcom_result, context=context)
        except (AirflowFailException, AirflowSkipException):
            raise
        except AirflowException as failed:
            redact_exception(failed, airflow_text_redactor())
            exit_code = container_exit_code(remote_pod, self.base_container_name)
            if exit_code == VERDICT_EXIT_CODE:
                raise AirflowFailException(
                    f"{failed}\ncontainer {self.base_container_name!r} exited with code {exit_code}: a verdict "
                    f"on its input, not retried") from failed
            raise

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        """Deferrable mode: the KPO's resumption, its error (the trigger's message) redacted."""
        try:
            return super().trigger_reentry(context, event)
        except Exception as exc:
            redact_exception(exc, airflow_text_redactor())
            raise


def container_exit_code(pod: k8s.V1Pod | None, container_name: str) -> int | None:
    """The exit code of ``container_name`` in ``pod``'s status; None until it has terminated."""
    status = getattr(pod, "status", None)
    for container in getattr(status, "container_statuses", None) or []:
        if container.name == container_name and container.state and container.state.terminated:
            return container.state.terminated.exit_code
    return None


class PodJobTask(Protocol):
    """What :func:`build_pod_operator` reads of the Airflow task
    (:class:`llmops.launch.kubernetes.PodJobKubernetesOperator`)."""

    task_id: str
    pod_job: dict[str, Any]
    image_settings: Mapping[str, str]
    kubernetes_kwargs: Mapping[str, Any]
    model_cache_claim: str
    do_xcom_push: bool
    multiple_outputs: bool
    execution_timeout: Any

    def get_template_env(self) -> Any:
        """The task's Jinja environment."""
        ...


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


def build_pod_operator(task: PodJobTask,
                       context: Mapping[str, Any] | None = None) -> PodJobPodOperator:
    """The ``KubernetesPodOperator`` that runs ``task``'s pod job.

    ``task.pod_job`` is used as it is: Airflow has rendered it before ``execute`` (or the
    caller has, see :func:`llmops.launch.kubernetes.render_pod_manifest`). With ``context``
    the operator's own template fields (``namespace``, ``labels``... passed as operator
    arguments) are rendered here, once, with the task's Jinja environment. The pod job's
    attributes are applied after that, so they are never rendered twice.
    """
    refuse_unpinned_images(task.pod_job, task.image_settings)
    job = PodJob.from_dict(task.pod_job)  # the rendered job is validated again
    kwargs = dict(task.kubernetes_kwargs)
    kwargs.setdefault("security_context", pod_security_context())
    kwargs.setdefault("container_security_context", container_security_context())
    kwargs.setdefault("xcom_sidecar_container_security_context", container_security_context())
    kwargs.setdefault("startup_timeout_seconds", startup_timeout_s(task.pod_job))
    # Not part of a DAG: built at run time for one task instance; what the KPO reads of the
    # task's own settings is passed on.
    operator = PodJobPodOperator(
        task_id=task.task_id,
        do_xcom_push=task.do_xcom_push,
        multiple_outputs=task.multiple_outputs,
        execution_timeout=task.execution_timeout,
        **kwargs,
    )
    if context is not None:
        operator.render_template_fields(context, jinja_env=task.get_template_env())  # type: ignore[arg-type]
    apply_pod_job(operator, job, task.model_cache_claim)
    return operator


def apply_pod_job(operator: KubernetesPodOperator, job: PodJob, model_cache_claim: str) -> None:
    """Set the KPO attributes (image, cmds, arguments, env_vars, init_containers, volumes,
    node_selector, tolerations, ...) from a rendered pod job."""
    volumes = [_volume(v, model_cache_claim) for v in job.volumes]
    mounts = [k8s.V1VolumeMount(name=v.name, mount_path=v.mount_path) for v in job.volumes]
    operator.name = job.name
    operator.image = job.main.image
    operator.cmds = list(job.main.command)
    operator.arguments = list(job.main.args)
    operator.env_vars = _env(job.main, job.ports)
    operator.container_resources = _resources(job.main.resources)
    # A readiness probe on the main container is not used: it is a job, awaited to exit.
    operator.ports = _container_ports(job.main, job.ports)
    operator.volumes = volumes
    operator.volume_mounts = mounts
    # Plain init containers run to completion first, in order; native sidecars start after them.
    operator.init_containers = [
        *(_init_container(c, job.ports, mounts) for c in job.init_containers),
        *(_native_sidecar(c, job.ports, mounts) for c in job.sidecars),
    ]
    if job.kubernetes_api:
        operator.automount_service_account_token = True
    operator.node_selector = dict(job.scheduling.node_selector)
    operator.tolerations = [
        k8s.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
        for t in job.scheduling.tolerations
    ]
    operator.labels = {**(operator.labels or {}), **job.labels}
    operator.active_deadline_seconds = job.timeout_s


def manifest(pod: k8s.V1Pod) -> dict[str, Any]:
    """A pod as a camelCase manifest dict (what ``kubectl`` would be given)."""
    return ApiClient().sanitize_for_serialization(pod)


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
