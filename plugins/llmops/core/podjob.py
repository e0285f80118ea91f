"""The pod-job contract: one unit of heavy work, described as data.

A pod job is what both launchers run: the ``kubernetes`` launcher turns it into a
``KubernetesPodOperator`` pod, the ``local`` launcher into local processes. It is
plain data (frozen dataclasses) with a dict form, because operators receive it as
a templated field: any string in it may hold Jinja (``{{ params.model }}``,
``{{ ti.xcom_pull(...) }}``), rendered by Airflow before either launcher reads it.

Conventions shared by both launchers:

* ``ports`` are pod-level named ports exported as env vars into every container
  (``{"VLLM_PORT": 8000}``); commands, args and env values refer to them with
  Kubernetes' own ``$(VLLM_PORT)`` expansion. The local launcher picks a free port
  instead so that several local pods can run at once.
* ``volumes`` are mounted at absolute paths; the local launcher maps each mount
  path to a local directory and rewrites paths under it.
* A job writes its result as JSON to ``/airflow/xcom/return.json`` (the
  ``KubernetesPodOperator`` convention; see :func:`llmops.jobs.common.write_result`).
* ``secret_env`` values come from Kubernetes Secrets, never from the repo.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

VERDICT_EXIT_CODE = 2
"""A job's exit code for a verdict (a rejected drop, a failed check): the input is wrong, so the
launchers fail the task without retrying it; any other non-zero code is an error worth a retry."""

XCOM_DIR = "/airflow/xcom"
"""Where a job writes ``return.json``; fixed by the KubernetesPodOperator's xcom sidecar."""

VolumeKind = Literal["model_cache", "shm", "scratch"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PodJobError(ValueError):
    """A pod job that cannot be run as described; the message names the field and the fix."""


@dataclass(frozen=True)
class SecretEnv:
    """An env var whose value comes from a key of a Kubernetes Secret."""

    secret: str
    key: str


@dataclass(frozen=True)
class Probe:
    """An HTTP GET probe on ``127.0.0.1:$(port_env)`` + ``path``.

    Rendered as both startupProbe and readinessProbe of a native sidecar: the
    kubelet starts the main container only once the startup probe succeeds, which
    is what the local launcher does too.
    """

    path: str
    port_env: str
    initial_delay_s: int = 0
    period_s: int = 2
    timeout_s: int = 2
    failure_threshold: int = 150


@dataclass(frozen=True)
class Resources:
    """Requests (and, for memory and GPUs, limits) of one container."""

    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = 0


@dataclass(frozen=True)
class Container:
    """One container of a pod job: the main job or a long-running sidecar."""

    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, SecretEnv] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    readiness_probe: Probe | None = None


@dataclass(frozen=True)
class Volume:
    """A volume mounted into every container of the pod at ``mount_path``."""

    name: str
    mount_path: str
    kind: VolumeKind
    size_limit: str | None = None


@dataclass(frozen=True)
class Toleration:
    """A Kubernetes toleration (e.g. for the ``nvidia.com/gpu`` taint)."""

    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


@dataclass(frozen=True)
class Scheduling:
    """Where the pod may run: filled from the hardware class."""

    hardware_class: str = "cpu"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True)
class PodJob:
    """A unit of heavy work: a main container, optional sidecars, shared ports and volumes.

    ``init_containers`` run to completion, in order, before the sidecars start (e.g.
    fetch the weights into the model cache and verify their digest); a failing one
    fails the pod before anything is served.
    """

    name: str
    main: Container
    sidecars: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    ports: dict[str, int] = field(default_factory=dict)
    volumes: tuple[Volume, ...] = ()
    scheduling: Scheduling = field(default_factory=Scheduling)
    labels: dict[str, str] = field(default_factory=dict)
    timeout_s: int = 3600
    # Jobs get no Kubernetes API token, except those whose work is the API (the gateway canary
    # controller patches HTTPRoutes); their service account needs the RBAC for it.
    kubernetes_api: bool = False

    @property
    def containers(self) -> tuple[Container, ...]:
        """In start order: init containers, sidecars, then the main container."""
        return (*self.init_containers, *self.sidecars, self.main)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form operators carry as a templated field."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PodJob:
        """Rebuild a pod job from :meth:`to_dict` output (after template rendering) and validate it."""
        try:
            job = cls(
                name=data["name"],
                main=_container_from_dict(data["main"]),
                sidecars=tuple(_container_from_dict(c) for c in data.get("sidecars", ())),
                init_containers=tuple(_container_from_dict(c) for c in data.get("init_containers", ())),
                ports={k: int(v) for k, v in data.get("ports", {}).items()},
                volumes=tuple(Volume(**v) for v in data.get("volumes", ())),
                scheduling=_scheduling_from_dict(data.get("scheduling", {})),
                labels=dict(data.get("labels", {})),
                timeout_s=int(data.get("timeout_s", 3600)),
                kubernetes_api=bool(data.get("kubernetes_api", False)),
            )
        except (KeyError, TypeError) as exc:
            raise PodJobError(f"pod job {data.get('name', '?')!r} is malformed: {exc}") from exc
        job.validate()
        return job

    def validate(self) -> None:
        """Check what both launchers rely on; raise :class:`PodJobError` naming the field."""
        if not _DNS_LABEL.match(self.name):
            raise PodJobError(
                f"pod job name {self.name!r}: must be a DNS label (lowercase letters, digits, '-', <= 63 chars)"
            )
        names = [c.name for c in self.containers]
        if len(set(names)) != len(names):
            raise PodJobError(f"pod job {self.name!r}: container names must be unique, got {names}")
        for container in self.containers:
            where = f"pod job {self.name!r}, container {container.name!r}"
            if not _DNS_LABEL.match(container.name):
                raise PodJobError(f"{where}: name must be a DNS label")
            if not container.command:
                raise PodJobError(f"{where}: command is empty")
            for env_name in (*container.env, *container.secret_env):
                if not _ENV_NAME.match(env_name):
                    raise PodJobError(f"{where}: env name {env_name!r} is not a valid variable name")
            if container.readiness_probe and container.readiness_probe.port_env not in self.ports:
                raise PodJobError(
                    f"{where}: readiness_probe.port_env {container.readiness_probe.port_env!r} "
                    f"is not one of the pod's ports {sorted(self.ports)}"
                )
        for container in self.init_containers:
            if container.readiness_probe is not None:
                raise PodJobError(f"pod job {self.name!r}, init container {container.name!r}: an init container "
                                  f"runs to completion and cannot have a readiness probe")
        for port_name, port in self.ports.items():
            if not _ENV_NAME.match(port_name) or not 1 <= port <= 65535:
                raise PodJobError(f"pod job {self.name!r}: port {port_name}={port} is not a valid env name/port")
        mounts = [v.mount_path for v in self.volumes]
        if any(not m.startswith("/") for m in mounts) or len(set(mounts)) != len(mounts):
            raise PodJobError(f"pod job {self.name!r}: volume mount paths must be absolute and unique: {mounts}")
        if XCOM_DIR in mounts:
            raise PodJobError(f"pod job {self.name!r}: {XCOM_DIR} is reserved for the result volume")
        if self.timeout_s <= 0:
            raise PodJobError(f"pod job {self.name!r}: timeout_s must be positive")


def _container_from_dict(data: dict[str, Any]) -> Container:
    probe = data.get("readiness_probe")
    return Container(
        name=data["name"],
        image=data["image"],
        command=tuple(str(a) for a in data["command"]),
        args=tuple(str(a) for a in data.get("args", ())),
        env={k: str(v) for k, v in data.get("env", {}).items()},
        secret_env={k: SecretEnv(**v) for k, v in data.get("secret_env", {}).items()},
        resources=Resources(**data.get("resources", {})),
        readiness_probe=Probe(**probe) if probe else None,
    )


def _scheduling_from_dict(data: dict[str, Any]) -> Scheduling:
    return Scheduling(
        hardware_class=data.get("hardware_class", "cpu"),
        node_selector=dict(data.get("node_selector", {})),
        tolerations=tuple(Toleration(**t) for t in data.get("tolerations", ())),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


def literal(value: str) -> str:
    """``value`` as a container must receive it, unexpanded: ``$`` doubled, so neither the
    kubelet nor the local launcher turns a ``$(VAR)`` that a user typed into the value of a
    pod env var (a secret, say). A parameter is data, never a reference."""
    return value.replace("$", "$$")


def literal_template(expression: str) -> str:
    """A Jinja template rendering ``expression`` (a param, an XCom value) as a :func:`literal`."""
    return "{{ (" + expression + ") | string | replace('$', '$$') }}"


def expand_env_refs(text: str, env: dict[str, str]) -> str:
    """Expand ``$(VAR)`` the way the kubelet does in command, args and env values.

    A reference to a variable that is not defined is left as it is, and ``$$``
    escapes to ``$``, exactly as in Kubernetes.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)
