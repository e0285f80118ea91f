"""The embedded default's traffic router: a real nginx in front of the stable and canary servers.

A child process with its own prefix, config, pid and log files in a work folder, listening
on a free loopback port. ``split_clients`` on the per-request ``$request_id`` picks the
upstream (``stable`` or ``canary``) for each request; ``X-Llmops-Backend`` tells the client
which one answered. A weight change rewrites the config and reloads nginx (SIGHUP to the
master), then waits until a fresh connection reads the new weights back from the proxy itself.
:func:`nginx_conf` is a pure function of the weights and addresses, tested on its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Set as AbstractSet
from pathlib import Path

from llmops.config import settings
from llmops.serving.routers import BACKEND_HEADER, CANARY, STABLE, RouterError, WeightChange, check_percent, host_port

WEIGHTS_PATH = "/llmops/weights"
"""The nginx router's read-back location: answers ``generation=G stable=S canary=C``."""

NGINX_BIN_ENV = "LLMOPS_NGINX_BIN"
DEFAULT_NGINX_BIN = "/usr/sbin/nginx"


def split_clients_block(canary_percent: int, variable: str = "$llmops_backend") -> str:
    """The ``split_clients`` block choosing the backend of each request by its ``$request_id``.

    nginx refuses a 0% entry, so 0% and 100% are a single catch-all to one backend.
    """
    percent = check_percent(canary_percent)
    if percent == 0:
        entries = [f"* {STABLE};"]
    elif percent == 100:
        entries = [f"* {CANARY};"]
    else:
        entries = [f"{percent}% {CANARY};", f"* {STABLE};"]
    body = "".join(f"        {entry}\n" for entry in entries)
    return f'    split_clients "${{request_id}}" {variable} {{\n{body}    }}\n'


def nginx_conf(*, listen_port: int, stable: str, canary: str, canary_percent: int, work_dir: str | Path,
               generation: int = 0, read_timeout_s: int = 300) -> str:
    """The whole nginx config of the router (pure): two upstreams, a weighted split, streaming proxy.

    ``stable``/``canary`` are ``host:port`` addresses. Every path nginx writes (pid, logs,
    temp files) is under ``work_dir``, so it runs unprivileged beside other nginx instances.
    ``generation`` is echoed by the read-back location, so a reload is confirmed only when
    workers started from *this* config answer.
    """
    percent = check_percent(canary_percent)
    work = Path(work_dir)
    temp = {kind: work / "temp" / kind for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    return f"""# Written by llmops.serving.routers.NginxRouter: regenerated on every weight change; do not edit.
daemon off;
master_process on;
worker_processes 1;
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};

    upstream {STABLE} {{
        server {stable};
        keepalive 16;
    }}
    upstream {CANARY} {{
        server {canary};
        keepalive 16;
    }}

    # One independent draw per request: {percent}% of requests go to the canary.
{split_clients_block(percent)}
    server {{
        listen 127.0.0.1:{listen_port};

        location = {WEIGHTS_PATH} {{
            default_type text/plain;
            return 200 "generation={generation} {STABLE}={100 - percent} {CANARY}={percent}\\n";
        }}

        location / {{
            proxy_pass http://$llmops_backend;
            # HTTP/1.1 with an empty Connection header: keep-alive to the upstreams and
            # chunked server-sent events pass through unchanged.
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # Stream tokens as they come: no response or request buffering.
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout {read_timeout_s}s;
            proxy_send_timeout {read_timeout_s}s;
            # Each upstream has one server: a failed request is the backend's error, not retried.
            proxy_next_upstream off;
            add_header {BACKEND_HEADER} $llmops_backend always;
        }}
    }}
}}
"""


def parse_weights(text: str) -> tuple[int, int, int]:
    """``generation=G stable=S canary=C`` (the read-back body) -> ``(generation, stable, canary)``."""
    try:
        fields = dict(part.split("=", 1) for part in text.split())
        return int(fields["generation"]), int(fields[STABLE]), int(fields[CANARY])
    except (KeyError, ValueError) as exc:
        raise RouterError(f"unexpected read-back from the proxy: {text!r}") from exc


def find_nginx(nginx_bin: str | None = None) -> str:
    """The nginx binary: the argument, ``$LLMOPS_NGINX_BIN``, ``nginx`` on PATH or /usr/sbin/nginx."""
    candidates = [nginx_bin, settings.env(NGINX_BIN_ENV), shutil.which("nginx"), DEFAULT_NGINX_BIN]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RouterError(f"nginx not found (tried {[c for c in candidates if c]}): install it "
                      f"(`apt-get install -y nginx-light`) or set {NGINX_BIN_ENV} to its path")


class NginxRouter:
    """A real nginx in front of the stable and canary servers (see the module docstring).

    Starts at 0% canary. Use as a context manager, or call :meth:`close`: the nginx master and
    its workers are stopped either way.
    """

    def __init__(self, stable_url: str, canary_url: str, work_dir: str | Path, *, nginx_bin: str | None = None,
                 listen_port: int | None = None, confirm_timeout_s: float = 10.0) -> None:
        self.stable = host_port(stable_url, "stable_url")
        self.canary = host_port(canary_url, "canary_url")
        self.work_dir = Path(work_dir).resolve()
        self.nginx_bin = find_nginx(nginx_bin)
        self.confirm_timeout_s = confirm_timeout_s
        self._generation = 0
        self._percent = 0
        self._process: subprocess.Popen[bytes] | None = None
        for folder in ("temp/client_body", "temp/proxy", "temp/fastcgi", "temp/uwsgi", "temp/scgi"):
            (self.work_dir / folder).mkdir(parents=True, exist_ok=True)
        self.conf_path = self.work_dir / "nginx.conf"
        self._start(listen_port)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``: where clients send their traffic."""
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def pid(self) -> int | None:
        """Process id of the nginx master (None once closed)."""
        return self._process.pid if self._process else None

    def set_weights(self, canary_percent: int) -> WeightChange:
        """Rewrite the config, reload nginx and wait until the new weights are read back."""
        percent = check_percent(canary_percent)
        process = self._running()
        started = time.perf_counter()
        old_workers = set(self._active_workers(process.pid))
        self._generation += 1
        self._write_conf(percent)
        # SIGHUP: the master re-reads the config, starts new workers and lets the old ones
        # finish their in-flight requests (streams are not cut), as `nginx -s reload` does.
        process.send_signal(signal.SIGHUP)
        confirmed_at = self._await_generation(self._generation, percent, old_workers)
        self._percent = percent
        return WeightChange(100 - percent, percent, time.perf_counter() - started, confirmed_at)

    def weights(self) -> tuple[int, int]:
        """``(stable, canary)`` as answered by the running nginx."""
        _, stable, canary = parse_weights(self._read_back(timeout_s=2.0))
        return stable, canary

    def close(self) -> None:
        """Stop nginx: SIGQUIT (graceful, in-flight requests finish), SIGKILL after 5 s."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            workers = _children(process.pid)
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                workers += _children(process.pid)
                process.kill()
                process.wait()
            # Workers outlive a killed master: clear any left.
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __enter__(self) -> NginxRouter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def error_log_tail(self, lines: int = 20) -> str:
        """The last lines of nginx's error log (for error messages)."""
        path = self.work_dir / "error.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- internals ---------------------------------------------------------------------------

    def _start(self, listen_port: int | None) -> None:
        # A free port picked here can be taken before nginx binds it: retry with another.
        attempts = 1 if listen_port else 3
        for _ in range(attempts):
            self.listen_port = listen_port or _free_port()
            self._write_conf(self._percent)
            self._process = subprocess.Popen(
                [self.nginx_bin, "-p", str(self.work_dir), "-c", str(self.conf_path),
                 "-e", str(self.work_dir / "error.log")],
                # In the caller's process group on purpose: a pod (or launcher) that kills the
                # controller's group takes nginx with it, so no proxy outlives its controller.
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                self._await_generation(self._generation, self._percent)
                return
            except RouterError:
                self.close()
        raise RouterError(f"nginx did not start on 127.0.0.1:{self.listen_port}; error log:\n"
                          f"{self.error_log_tail()}")

    def _write_conf(self, percent: int) -> None:
        text = nginx_conf(listen_port=self.listen_port, stable=self.stable, canary=self.canary,
                          canary_percent=percent, work_dir=self.work_dir, generation=self._generation)
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.conf_path)  # nginx never reads half a config

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RouterError("the nginx router is closed; create a new NginxRouter")
        if self._process.poll() is not None:
            raise RouterError(f"nginx exited with code {self._process.returncode}; error log:\n"
                              f"{self.error_log_tail()}")
        return self._process

    def _read_back(self, timeout_s: float) -> str:
        # A fresh connection per read: after a reload only new workers accept connections.
        request = urllib.request.Request(self.endpoint + WEIGHTS_PATH, headers={"Connection": "close"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read().decode()

    def _active_workers(self, master_pid: int) -> list[int]:
        """Worker pids of the master that still accept connections (Linux ``/proc``).

        After a reload the old workers keep accepting on the shared listening socket until
        they process the master's shutdown message (sent ~100 ms after the new workers
        start); they then retitle themselves ``worker process is shutting down`` and close
        the socket. Until every old worker has done so, a new request may still be routed
        by the old weights.
        """
        active = []
        for pid in _children(master_pid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # exited while we looked
            if "worker process" in title and "shutting down" not in title:
                active.append(pid)
        return active

    def _await_generation(self, generation: int, percent: int, old_workers: AbstractSet[int] = frozenset()) -> float:
        """Wait until the new config answers the read-back and no old worker still accepts."""
        deadline = time.monotonic() + self.confirm_timeout_s
        last = ""
        while time.monotonic() < deadline:
            process = self._running()
            try:
                last = self._read_back(timeout_s=1.0)
                seen, _, canary = parse_weights(last)
                if (seen == generation and canary == percent
                        and not old_workers.intersection(self._active_workers(process.pid))):
                    return time.time()
            except (urllib.error.URLError, OSError):
                pass
            if process.poll() is not None:
                break
            time.sleep(0.005)
        raise RouterError(f"nginx did not confirm generation {generation} ({percent}% canary) within "
                          f"{self.confirm_timeout_s:g}s (last read-back {last!r}); error log:\n"
                          f"{self.error_log_tail()}")


def _children(parent: int) -> list[int]:
    """Pids of the live child processes of ``parent`` (Linux ``/proc``)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
    return children


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


