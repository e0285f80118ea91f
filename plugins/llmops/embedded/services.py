"""Background services of the embedded platform: start detached, await health, stop cleanly.

Each service runs in its own process session (so a Ctrl-C in the terminal that
started it does not reach it, and stopping it reaches all its children), with a
pid file and a log file under the platform's data folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmops.config import settings


class ServiceError(RuntimeError):
    """A service did not start or stop as expected; the message points at its log."""


@dataclass
class Service:
    """A long-running local server (S3 endpoint, MLflow, Airflow)."""

    name: str
    argv: list[str]
    port: int
    health_url: str
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 120.0
    stop_signal: signal.Signals = signal.SIGINT  # like Ctrl-C: Airflow and gunicorn stop their children
    health_check: Callable[[Service], bool] | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded pid if that process is still alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def healthy(self) -> bool:
        """True when the service answers its health check."""
        if self.health_check is not None:
            return self.health_check(self)
        try:
            with urllib.request.urlopen(self.health_url, timeout=3) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> bool:
        """Start the service unless it already runs; wait until healthy. True if it was started now."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.pid() is not None and self.healthy():
            return False
        if port_in_use(self.port):
            raise ServiceError(
                f"{self.name}: port {self.port} is already in use by another process; stop it or set "
                f"the port variable (see README, 'Services')"
            )
        log = self.log_file.open("ab")
        env = {**settings.process_environ(), **self.env}
        proc = subprocess.Popen(
            self.argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"{self.name} exited with code {proc.returncode}; see {self.log_file}:\n"
                                   f"{tail(self.log_file)}")
            if self.healthy():
                return True
            time.sleep(0.5)
        self.stop()
        raise ServiceError(f"{self.name} not healthy at {self.health_url} after {self.start_timeout_s:.0f}s; "
                           f"see {self.log_file}:\n{tail(self.log_file)}")

    def stop(self, grace_s: float = 20.0) -> bool:
        """Stop the whole process group: the stop signal, then SIGKILL after ``grace_s``."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _killpg(pid, self.stop_signal)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.3)
        if _group_alive(pid):
            _killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file (for error messages)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _killpg(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombie children of ours count as gone.
    try:
        waited, _ = os.waitpid(pgid, os.WNOHANG)
        if waited == pgid:
            return _group_alive_after_reap(pgid)
    except ChildProcessError:
        pass
    return True


def _group_alive_after_reap(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
