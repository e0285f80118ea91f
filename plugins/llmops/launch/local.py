"""The ``local`` launcher: run a pod job as local processes, with pod semantics.

What a kubelet would do for the pod, done with processes on this machine:

1. every pod port gets a free local port, exported as the same env var;
2. each volume's mount path maps to a local folder, the result volume
   (``/airflow/xcom``) to a fresh folder of this pod;
3. env is built per container (``$(VAR)`` expanded as the kubelet does, secrets
   read from the local secrets folder that stands in for Kubernetes Secrets);
4. init containers run to completion, in order; then sidecars start, and the main
   container starts only once each sidecar's probe answers (the native-sidecar
   startup probe);
5. the main container runs to completion under the pod's deadline, its logs and
   the sidecars' streamed to the task log;
6. sidecars are stopped (SIGTERM, grace period, SIGKILL) whatever happened;
7. a non-zero exit code fails the task, and ``return.json`` becomes the task's
   XCom, a missing or invalid one failing it, as the KubernetesPodOperator does; a
   failed main container's ``return.json`` travels with the failure (:class:`PodFailed`),
   for the operator to push as the KubernetesPodOperator does.

Secrets never leave through the launcher: every ``secret_env`` value of the pod is read
before anything starts, registered with Airflow's secrets masker, and replaced by ``***``
(:mod:`llmops.launch.redact`) in the container output it logs and keeps for failure
messages, in the errors it raises and in the result it returns.

An image is resolved to a local runtime: a ``bin`` folder whose executables
stand in for the image's (see ``settings.local_runtimes``). Resource requests
are not enforced locally.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.config import settings as settings_mod
from llmops.config.images import image_repository
from llmops.config.settings import PROJECT_ROOT, Settings
from llmops.core.podjob import XCOM_DIR, Container, PodJob, PodJobError, expand_env_refs
from llmops.launch.redact import Redactor, masker_min_length, redact_exception, register_with_airflow

RESULT_FILE = "return.json"
SIDECAR_STOP_GRACE_S = 10.0
_TAIL_LINES = 40


class PodFailed(RuntimeError):
    """The pod job ran and failed: the message carries the exit code and the log tail.

    ``container`` names the container whose exit code ``exit_code`` is; ``xcom`` is the
    (redacted) ``return.json`` a failed main container left behind, or None.
    """

    def __init__(self, message: str, exit_code: int | None = None, *, container: str | None = None,
                 xcom: Any = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.container = container
        self.xcom = xcom


@dataclass
class PodResult:
    """What a finished local pod left behind."""

    exit_code: int
    xcom: Any
    workdir: Path


class _Process:
    """One running container: a process group plus a thread streaming its output."""

    def __init__(self, container: Container, argv: list[str], env: dict[str, str], cwd: Path,
                 log: logging.Logger, redact: Callable[[str], str]) -> None:
        self.name = container.name
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.log = log
        self.redact = redact
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stopping it stops its children too
        )
        self._reader = threading.Thread(target=self._stream, name=f"log-{self.name}", daemon=True)
        self._reader.start()

    def _stream(self) -> None:
        assert self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            # Redacted before it is kept or logged: the tail ends up in failure messages.
            line = self.redact(raw.decode("utf-8", errors="replace").rstrip())
            self.tail.append(line)
            self.log.info("[%s] %s", self.name, line)

    def wait(self, timeout: float | None) -> int:
        code = self.popen.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self, grace_s: float) -> None:
        """SIGTERM the process group, then SIGKILL after the grace period (pod termination)."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.log.warning("[%s] did not stop in %.0fs; killing", self.name, grace_s)
        # Children may outlive a parent that exited on SIGTERM: clear the group either way.
        _signal_group(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        self._reader.join(timeout=5)

    def tail_text(self) -> str:
        return "\n".join(self.tail)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


class LocalPodRunner:
    """Runs :class:`PodJob` objects as local processes (see the module docstring)."""

    def __init__(self, settings: Settings, log: logging.Logger | None = None) -> None:
        self.settings = settings
        self.log = log or logging.getLogger(__name__)
        self._live: list[_Process] = []
        self._killed = False
        self._tmp_root = Path(tempfile.gettempdir())
        self._secrets: dict[tuple[str, str], str] = {}
        self.redactor = Redactor()
        """Hides the secret values of the pod being run (set by :meth:`run`)."""

    def kill(self) -> None:
        """Stop every container of the running pod (the task was killed or timed out)."""
        self._killed = True
        for proc in reversed(self._live):
            proc.stop(SIDECAR_STOP_GRACE_S)

    def run(self, job: PodJob, workdir: Path, *, do_xcom_push: bool = True) -> PodResult:
        """Run ``job`` to completion in ``workdir``; raise :class:`PodFailed` when it fails.

        Secret values of the pod are redacted from everything this logs, raises and returns.
        """
        job.validate()
        self.redactor = self._secret_redactor(job)
        try:
            return self._run(job, workdir, do_xcom_push)
        except Exception as exc:
            redact_exception(exc, self.redactor.text)
            raise

    def _run(self, job: PodJob, workdir: Path, do_xcom_push: bool) -> PodResult:
        if workdir.exists():
            # A retried task starts from a clean pod, as a new pod would.
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        ports = {name: _free_port() for name in job.ports}
        mounts = self._mounts(job, workdir)
        # TMPDIR is kept short and outside the work folder: vLLM binds ZeroMQ IPC sockets
        # under it, and a Unix socket path may not exceed 107 bytes.
        self._tmp_root = Path(tempfile.mkdtemp(prefix="llmops-pod-"))
        deadline = time.monotonic() + job.timeout_s
        sidecars: list[_Process] = []
        try:
            for container in job.init_containers:
                self._run_init(container, job, ports, mounts, workdir, deadline)
            for container in job.sidecars:
                proc = self._start(container, job, ports, mounts, workdir)
                sidecars.append(proc)
                if container.readiness_probe:
                    self._await_ready(proc, container, ports, deadline)
            main = self._start(job.main, job, ports, mounts, workdir)
            try:
                exit_code = main.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                main.stop(SIDECAR_STOP_GRACE_S)
                raise PodFailed(
                    f"pod job {job.name!r} exceeded its deadline of {job.timeout_s}s "
                    f"(activeDeadlineSeconds); last lines of {main.name!r}:\n{main.tail_text()}"
                ) from None
            for sidecar in sidecars:
                if sidecar.popen.poll() is not None:
                    self.log.warning("[%s] sidecar exited early with code %s", sidecar.name,
                                     sidecar.popen.returncode)
        finally:
            for sidecar in reversed(sidecars):
                sidecar.stop(SIDECAR_STOP_GRACE_S)
            shutil.rmtree(self._tmp_root, ignore_errors=True)
        if exit_code != 0:
            raise PodFailed(
                f"pod job {job.name!r}: container {job.main.name!r} exited with code {exit_code}; "
                f"last lines:\n{main.tail_text()}",
                exit_code=exit_code,
                container=job.main.name,
                # Why it failed (a verdict's reasons), for the task's XCom as the KPO pushes it.
                xcom=self._failed_result(job, mounts[XCOM_DIR]) if do_xcom_push else None,
            )
        return PodResult(exit_code=0, xcom=self._read_result(job, mounts[XCOM_DIR], do_xcom_push),
                         workdir=workdir)

    # -- pod set-up ---------------------------------------------------------------------------

    def _mounts(self, job: PodJob, workdir: Path) -> dict[str, Path]:
        """Mount path -> local folder, longest first so nested mounts map correctly."""
        mounts: dict[str, Path] = {XCOM_DIR: workdir / "xcom"}
        for volume in job.volumes:
            if volume.kind == "model_cache":
                local = self.settings.models_dir
            else:  # shm and scratch are per-pod emptyDirs
                local = workdir / "volumes" / volume.name
            mounts[volume.mount_path] = local
        for local in mounts.values():
            local.mkdir(parents=True, exist_ok=True)
        return dict(sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True))

    def _runtime_bin(self, container: Container) -> Path:
        repo = image_repository(container.image)
        runtime = self.settings.local_runtimes.get(repo)
        if runtime is None:
            raise PodJobError(
                f"container {container.name!r}: no local runtime for image {container.image!r}; "
                f"add {{\"{repo}\": \"/path/to/venv/bin\"}} to LLMOPS_LOCAL_RUNTIMES"
            )
        if not runtime.is_dir():
            raise PodJobError(
                f"container {container.name!r}: local runtime {runtime} for image {repo!r} does not exist; "
                f"create it (for vLLM: `make vllm-env`) or point LLMOPS_LOCAL_RUNTIMES at another folder"
            )
        return runtime

    def _env(self, container: Container, ports: dict[str, int], mounts: dict[str, Path],
             workdir: Path, runtime: Path) -> dict[str, str]:
        tmp = self._tmp_root / container.name
        tmp.mkdir(parents=True, exist_ok=True)
        # A container sees only what its spec gives it, plus what an image provides
        # (PATH, HOME) and the mapping of this launcher (result folder, package path).
        env: dict[str, str] = {
            "PATH": f"{runtime}{os.pathsep}{settings_mod.env('PATH') or os.defpath}",
            "HOME": settings_mod.env("HOME") or str(workdir),
            "LANG": "C.UTF-8",
            "TMPDIR": str(tmp),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
            "LLMOPS_XCOM_DIR": str(mounts[XCOM_DIR]),
            "LLMOPS_POD_MOUNTS": json.dumps({k: str(v) for k, v in mounts.items()}),
        }
        env.update({name: str(port) for name, port in ports.items()})
        for name, value in container.env.items():
            env[name] = _map_paths(expand_env_refs(value, env), mounts)
        for name, ref in container.secret_env.items():
            env[name] = self._secret(container, name, ref.secret, ref.key)
        return env

    def _secret_redactor(self, job: PodJob) -> Redactor:
        """Read every secret of ``job`` up front, register each with Airflow's secrets masker
        and return the redactor that hides them (short values excepted, as the masker does)."""
        self._secrets = {}
        min_length = masker_min_length()
        for container in job.containers:
            for name, ref in container.secret_env.items():
                value = self._secret(container, name, ref.secret, ref.key)
                if value and len(value) < min_length:
                    self.log.warning("container %s: env %s (secret %r key %r) has fewer than %d characters "
                                     "and is not masked in logs ([logging] min_length_masked_secret)",
                                     container.name, name, ref.secret, ref.key, min_length)
        secrets = set(self._secrets.values())
        register_with_airflow(secrets)
        return Redactor.for_secrets(secrets, min_length=min_length)

    def _secret(self, container: Container, env_name: str, secret: str, key: str) -> str:
        if (secret, key) in self._secrets:
            return self._secrets[secret, key]
        path = self.settings.secrets_dir / secret / key
        try:
            value = self._secrets[secret, key] = path.read_text().strip()
            return value
        except FileNotFoundError:
            raise PodJobError(
                f"container {container.name!r}: env {env_name} needs secret {secret!r} key {key!r}; "
                f"create {path} (the local stand-in for the Kubernetes Secret)"
            ) from None

    def _start(self, container: Container, job: PodJob, ports: dict[str, int],
               mounts: dict[str, Path], workdir: Path) -> _Process:
        runtime = self._runtime_bin(container)
        env = self._env(container, ports, mounts, workdir, runtime)
        argv = [_map_paths(expand_env_refs(a, env), mounts) for a in (*container.command, *container.args)]
        resolved = shutil.which(argv[0], path=env["PATH"])
        if resolved is None:
            raise PodJobError(
                f"container {container.name!r}: command {argv[0]!r} not found in runtime {runtime} "
                f"(image {container.image!r})"
            )
        argv[0] = resolved
        if self._killed:
            raise PodFailed(f"pod job {job.name!r} was killed before container {container.name!r} started")
        # Args may hold a secret through $(VAR) expansion.
        self.log.info("pod %s: starting container %s: %s", job.name, container.name,
                      self.redactor.text(" ".join(argv)))
        # Containers start in the project root: the jobs image's WORKDIR holds the same
        # dags/, include/ and plugins/, so relative paths in args resolve alike.
        proc = _Process(container, argv, env, PROJECT_ROOT, self.log, self.redactor.text)
        self._live.append(proc)
        return proc

    def _run_init(self, container: Container, job: PodJob, ports: dict[str, int], mounts: dict[str, Path],
                  workdir: Path, deadline: float) -> None:
        proc = self._start(container, job, ports, mounts, workdir)
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.stop(SIDECAR_STOP_GRACE_S)
            raise PodFailed(f"pod job {job.name!r}: init container {container.name!r} exceeded the pod's "
                            f"deadline of {job.timeout_s}s") from None
        if code != 0:
            raise PodFailed(f"pod job {job.name!r}: init container {container.name!r} exited with code {code}; "
                            f"last lines:\n{proc.tail_text()}", exit_code=code, container=container.name)

    def _await_ready(self, proc: _Process, container: Container, ports: dict[str, int],
                     deadline: float) -> None:
        probe = container.readiness_probe
        assert probe is not None
        url = f"http://127.0.0.1:{ports[probe.port_env]}{probe.path}"
        time.sleep(probe.initial_delay_s)
        started = time.monotonic()
        for attempt in range(1, probe.failure_threshold + 1):
            if proc.popen.poll() is not None:
                raise PodFailed(
                    f"sidecar {container.name!r} exited with code {proc.popen.returncode} before its "
                    f"probe {probe.path} answered; last lines:\n{proc.tail_text()}",
                    exit_code=proc.popen.returncode,
                    container=container.name,
                )
            if _http_ok(url, probe.timeout_s):
                self.log.info("sidecar %s ready after %.1fs (%s)", container.name,
                              time.monotonic() - started, url)
                return
            if time.monotonic() > deadline:
                break
            self.log.debug("probe %s attempt %d failed", url, attempt)
            time.sleep(probe.period_s)
        raise PodFailed(
            f"sidecar {container.name!r} not ready: probe {url} failed {probe.failure_threshold} times "
            f"(period {probe.period_s}s); last lines:\n{proc.tail_text()}"
        )

    def _read_result(self, job: PodJob, xcom_dir: Path, do_xcom_push: bool) -> Any:
        path = xcom_dir / RESULT_FILE
        if not do_xcom_push:
            return None
        if not path.exists():
            raise PodFailed(
                f"pod job {job.name!r} exited 0 but wrote no {XCOM_DIR}/{RESULT_FILE}; "
                f"jobs must call llmops.jobs.common.write_result (or run with do_xcom_push=False)"
            )
        try:
            return self.redactor.data(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise PodFailed(f"pod job {job.name!r}: {XCOM_DIR}/{RESULT_FILE} is not valid JSON: {exc}") from exc

    def _failed_result(self, job: PodJob, xcom_dir: Path) -> Any:
        """The (redacted) ``return.json`` a failed main container wrote, or None."""
        path = xcom_dir / RESULT_FILE
        if not path.exists():
            return None
        try:
            return self.redactor.data(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            self.log.warning("pod job %s failed and its %s/%s is not valid JSON: %s", job.name, XCOM_DIR,
                             RESULT_FILE, self.redactor.text(str(exc)))
            return None


def _map_paths(value: str, mounts: dict[str, Path]) -> str:
    """Rewrite container paths under a mount to the local folder (in place of a bind mount).

    Paths are matched at the start of the value or after ``=`` (``--flag=/models/x``),
    on a path-component boundary, longest mount first.
    """
    for mount, local in mounts.items():
        pattern = re.compile(r"(^|=)" + re.escape(mount) + r"(?=/|$)")
        value = pattern.sub(lambda m, local=local: m.group(1) + str(local), value)
    return value


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_ok(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 400
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
