"""The canary stage's I/O without vLLM: the nginx and Gateway API routers, replayed traffic,
the controller CLI against fake OpenAI servers, and the canary pod job's rendering.

The nginx tests run a REAL nginx (``/usr/sbin/nginx``, Debian ``nginx-light``) in front of
stdlib HTTP servers; only the Kubernetes API server is mocked (it cannot run here).
"""

from __future__ import annotations

import collections
import http.server
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import kubernetes_validate
import pytest

from llmops.canary.analysis import CanarySpec
from llmops.canary.plan import (
    CANARY_CONTAINER,
    CANARY_PORT_ENV,
    STABLE_CONTAINER,
    STABLE_PORT_ENV,
    canary_pod_job,
    override_args,
)
from llmops.canary.traffic import RequestRecord, replay_window, sampled, traffic_order, window_metrics
from llmops.config import settings as settings_mod
from llmops.config.kubernetes import KUBERNETES_MIN_VERSION
from llmops.config.settings import PROJECT_ROOT
from llmops.core.hardware import load_hardware_class
from llmops.evals.evalset import EvalItem, load_evalset
from llmops.jobs import canary as canary_job
from llmops.serving.gateway_router import (
    GATEWAY_GROUP,
    HTTPROUTE_PLURAL,
    GatewayHttpRouteRouter,
    httproute_weights_patch,
)
from llmops.serving.nginx_router import NginxRouter, nginx_conf, split_clients_block
from llmops.serving.routers import BACKEND_HEADER, RouterError, TrafficRouter

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_nginx = pytest.mark.skipif(not os.access(NGINX, os.X_OK),
                                 reason="nginx is not installed: apt-get install -y nginx-light")
EVALSET = PROJECT_ROOT / "include" / "evalsets" / "synthetic_chat_v1.yaml"
PERCENTS = (0, 5, 25, 50, 100)


# -- nginx config (pure) --------------------------------------------------------------------------


def _conf(percent: int, work_dir: Path = Path("/work/nginx")) -> str:
    return nginx_conf(listen_port=18080, stable="127.0.0.1:8000", canary="127.0.0.1:8001",
                      canary_percent=percent, work_dir=work_dir, generation=7)


@pytest.mark.parametrize("percent", PERCENTS)
def test_conf_has_both_upstreams_and_a_streaming_proxy(percent: int) -> None:
    conf = _conf(percent)
    assert "upstream stable {\n        server 127.0.0.1:8000;" in conf
    assert "upstream canary {\n        server 127.0.0.1:8001;" in conf
    assert "listen 127.0.0.1:18080;" in conf
    assert "proxy_pass http://$llmops_backend;" in conf
    assert f"add_header {BACKEND_HEADER} $llmops_backend always;" in conf
    for directive in ("proxy_buffering off;", "proxy_request_buffering off;", "proxy_http_version 1.1;",
                      'proxy_set_header Connection "";', "daemon off;"):
        assert directive in conf
    assert f'return 200 "generation=7 stable={100 - percent} canary={percent}\\n";' in conf
    # Everything nginx writes stays in its work folder.
    assert "pid /work/nginx/nginx.pid;" in conf and "error_log /work/nginx/error.log warn;" in conf
    assert "proxy_temp_path /work/nginx/temp/proxy;" in conf


@pytest.mark.parametrize(("percent", "entries"), [
    (0, ["* stable;"]),
    (5, ["5% canary;", "* stable;"]),
    (25, ["25% canary;", "* stable;"]),
    (50, ["50% canary;", "* stable;"]),
    (100, ["* canary;"]),
])
def test_split_clients_percentages(percent: int, entries: list[str]) -> None:
    block = split_clients_block(percent)
    assert block.splitlines()[0].strip() == 'split_clients "${request_id}" $llmops_backend {'
    assert [line.strip() for line in block.splitlines()[1:-1]] == entries
    assert "0%" not in block.replace("100%", "").replace("50%", "")  # nginx refuses a 0% entry


@pytest.mark.parametrize("bad", [-1, 101, 2.5, True, "25"])
def test_percent_out_of_range_is_refused_by_name(bad: Any) -> None:
    with pytest.raises(ValueError, match="canary_percent"):
        split_clients_block(bad)


@needs_nginx
@pytest.mark.parametrize("percent", PERCENTS)
def test_generated_conf_passes_nginx_t(percent: int, tmp_path: Path) -> None:
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "temp" / folder).mkdir(parents=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(_conf(percent, tmp_path))
    done = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_router_refuses_a_url_without_port(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stable_url"):
        NginxRouter("http://stable", "http://127.0.0.1:1", tmp_path)


# -- a real nginx in front of two named servers ---------------------------------------------------


class _Named(http.server.BaseHTTPRequestHandler):
    """Answers GET with the server's name; /stream sends three chunks 0.3 s apart."""

    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: without TCP_NODELAY, Nagle and delayed ACKs
    # stall every keep-alive response by ~40 ms.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                data = f"{self.server.name}-{i}\n".encode()  # type: ignore[attr-defined]
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")
            return
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(name: str, handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def backends() -> Iterator[tuple[str, str]]:
    servers = [_serve("stable", _Named), _serve("canary", _Named)]
    yield tuple(f"http://127.0.0.1:{s.server_port}" for s in servers)  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def router(backends: tuple[str, str], tmp_path: Path) -> Iterator[NginxRouter]:
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed: apt-get install -y nginx-light")
    with NginxRouter(*backends, tmp_path / "nginx", nginx_bin=NGINX) as router:
        yield router
    assert router.pid is None
    assert not _alive_under(tmp_path / "nginx"), "nginx outlived close()"


def _alive_under(folder: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(folder) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _hits(endpoint: str, n: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        with urllib.request.urlopen(endpoint + "/", timeout=5) as response:
            body = response.read().decode()
            assert response.headers[BACKEND_HEADER] == body  # the header names who answered
            counts[body] += 1
    return counts


def test_real_nginx_splits_by_weight(router: NginxRouter) -> None:
    assert isinstance(router, TrafficRouter)
    assert router.weights() == (100, 0)  # starts with the canary out of traffic
    change = router.set_weights(25)
    assert (change.stable, change.canary) == (75, 25) and router.weights() == (75, 25)
    assert 0 < change.applied_s < 5
    quarter = _hits(router.endpoint, 400)["canary"]
    # Binomial(400, 0.25): mean 100, sd 8.7; +-40 is beyond 4.5 sd.
    assert 60 <= quarter <= 140, quarter
    router.set_weights(0)
    assert _hits(router.endpoint, 100) == {"stable": 100}
    router.set_weights(100)
    assert _hits(router.endpoint, 100) == {"canary": 100}


def test_reload_keeps_serving_and_streams_pass_through(router: NginxRouter) -> None:
    errors: list[str] = []
    served = [0]
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                _hits(router.endpoint, 1)
                served[0] += 1
            except Exception as exc:  # recorded and asserted below
                errors.append(repr(exc))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for percent in (5, 50, 100, 0, 25):
            router.set_weights(percent)
    finally:
        stop.set()
        thread.join()
    assert not errors and served[0] > 0

    # Unbuffered: the first chunk arrives long before the upstream sends the last one.
    router.set_weights(0)
    started = time.monotonic()
    with urllib.request.urlopen(router.endpoint + "/stream", timeout=5) as response:
        first = response.readline().decode().strip()
        first_at = time.monotonic() - started
        rest = response.read().decode().split()
    assert first == "stable-0" and rest == ["stable-1", "stable-2"]
    assert first_at < 0.45, f"first chunk after {first_at:.2f}s: the proxy buffered the stream"


def test_closed_router_refuses_to_route(router: NginxRouter) -> None:
    router.close()
    with pytest.raises(RouterError, match="closed"):
        router.set_weights(5)


# -- Gateway API HTTPRoute (mocked API server) ----------------------------------------------------


def _route(stable_weight: int = 100, canary_weight: int = 0, *, generation: int = 3,
           observed: int | None = 3) -> dict[str, Any]:
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "chat", "namespace": "serving", "resourceVersion": "4711", "generation": generation},
        "spec": {"parentRefs": [{"name": "llm-gateway"}], "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/metrics"}}],
             "backendRefs": [{"name": "exporter", "port": 9000}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
             "backendRefs": [{"name": "chat-stable", "port": 8000, "weight": stable_weight},
                             {"name": "chat-canary", "port": 8000, "weight": canary_weight}]},
        ]},
    }
    if observed is not None:
        route["status"] = {"parents": [{"parentRef": {"name": "llm-gateway"}, "conditions": [
            {"type": "Accepted", "status": "True", "observedGeneration": observed}]}]}
    return route


def _gateway(api: mock.Mock, **kwargs: Any) -> GatewayHttpRouteRouter:
    return GatewayHttpRouteRouter(route="chat", namespace="serving", stable_service="chat-stable",
                                  canary_service="chat-canary", endpoint="https://llm.example.com/", api=api,
                                  poll_s=0.0, **kwargs)


@pytest.mark.parametrize("percent", PERCENTS)
def test_gateway_patch_body_sets_both_weights(percent: int) -> None:
    patch = httproute_weights_patch(_route(), stable_service="chat-stable", canary_service="chat-canary",
                                    canary_percent=percent)
    assert patch["metadata"] == {"resourceVersion": "4711"}  # optimistic concurrency
    other, split = patch["spec"]["rules"]
    assert other == _route()["spec"]["rules"][0]  # a merge patch replaces lists: other rules are resent as is
    assert split["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    assert [(r["name"], r["port"], r["weight"]) for r in split["backendRefs"]] == [
        ("chat-stable", 8000, 100 - percent), ("chat-canary", 8000, percent)]
    for ref, role in zip(split["backendRefs"], ("stable", "canary"), strict=True):
        assert ref["filters"] == [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "set": [{"name": BACKEND_HEADER, "value": role}]}}]


def test_gateway_router_patches_through_the_custom_objects_api() -> None:
    api = mock.Mock()
    api.get_namespaced_custom_object.side_effect = [
        _route(),  # read before the patch
        _route(75, 25, generation=4, observed=3),  # the controller has not seen generation 4 yet
        _route(75, 25, generation=4, observed=4),
    ]
    api.patch_namespaced_custom_object.return_value = _route(75, 25, generation=4, observed=3)
    router = _gateway(api)
    change = router.set_weights(25)
    assert (change.stable, change.canary) == (75, 25)
    [call] = api.patch_namespaced_custom_object.call_args_list
    assert call.kwargs["group"] == GATEWAY_GROUP and call.kwargs["version"] == "v1"
    assert call.kwargs["plural"] == HTTPROUTE_PLURAL
    assert (call.kwargs["namespace"], call.kwargs["name"]) == ("serving", "chat")
    assert call.kwargs["field_manager"] == "llmops"  # the owner of the rendered route: SSA and the router agree
    assert call.kwargs["body"] == httproute_weights_patch(_route(), stable_service="chat-stable",
                                                          canary_service="chat-canary", canary_percent=25)
    assert api.get_namespaced_custom_object.call_count == 3  # waited for observedGeneration 4
    assert router.endpoint == "https://llm.example.com"
    router.close()


def test_gateway_router_reads_weights_back() -> None:
    api = mock.Mock()
    api.get_namespaced_custom_object.return_value = _route(95, 5)
    assert _gateway(api).weights() == (95, 5)


def test_gateway_router_times_out_when_the_gateway_never_accepts() -> None:
    api = mock.Mock()
    reads = itertools.chain([_route()], itertools.repeat(_route(0, 100, generation=4, observed=3)))
    api.get_namespaced_custom_object.side_effect = lambda **_: next(reads)
    api.patch_namespaced_custom_object.return_value = _route(0, 100, generation=4, observed=3)
    with pytest.raises(RouterError, match="not accepted"):
        _gateway(api, confirm_timeout_s=0.05).set_weights(100)


def test_gateway_patch_refuses_routes_it_cannot_split() -> None:
    route = _route()
    with pytest.raises(RouterError, match="no rule has a backendRef to the stable service 'other'"):
        httproute_weights_patch(route, stable_service="other", canary_service="chat-canary", canary_percent=5)
    route["spec"]["rules"][1]["backendRefs"].append({"name": "intruder", "port": 1})
    with pytest.raises(RouterError, match="intruder"):
        httproute_weights_patch(route, stable_service="chat-stable", canary_service="chat-canary", canary_percent=5)


# -- replayed traffic (pure parts) ----------------------------------------------------------------


def _record(seq: int, backend: str | None, *, error: str | None = None, ttft: float | None = 10.0,
            score: float | None = 1.0) -> RequestRecord:
    return RequestRecord(seq=seq, item_id=f"i{seq}", backend=backend, started_s=0.0, latency_ms=20.0,
                         ttft_ms=None if error else ttft, status=400 if error else 200, text="",
                         error=error, score=score)


def test_window_metrics_per_side() -> None:
    records = [_record(0, "canary", ttft=10), _record(1, "canary", error="HTTP 400", score=0.0),
               _record(2, "stable", ttft=5, score=None), _record(3, None, error="URLError")]
    canary = window_metrics(records, "canary", 1.0, 2.0)
    assert (canary.requests, canary.errors, canary.ttft_p95_ms) == (2, 1, 10)
    assert (canary.quality_samples, canary.quality_mean) == (2, 0.5)  # a failed request scores 0
    stable = window_metrics(records, "stable", 1.0, 2.0)
    assert (stable.requests, stable.errors, stable.quality_samples, stable.quality_mean) == (1, 0, 0, None)
    assert (stable.start_s, stable.end_s) == (canary.start_s, canary.end_s) == (1.0, 2.0)
    with pytest.raises(ValueError, match="side"):
        window_metrics(records, "blue", 1.0, 2.0)


def test_traffic_interleaves_categories_and_samples_evenly() -> None:
    items = [EvalItem(f"{c}{i}", c, ({"role": "user", "content": "x"},), "r", "exact_match")
             for c in "ab" for i in range(3)]
    assert [i.id for i in traffic_order(items)] == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert sum(sampled(seq, 0.25) for seq in range(400)) == 100
    assert all(sampled(seq, 1.0) for seq in range(10)) and not any(sampled(seq, 0.0) for seq in range(10))


# -- replayed traffic and the controller against fake OpenAI servers ------------------------------


def _fake_openai(name: str, answers: dict[str, str], refuse: bool) -> http.server.ThreadingHTTPServer:
    """An OpenAI-compatible stub: streams the eval reference in two chunks, or refuses with 400."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # /health
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # /v1/chat/completions
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if refuse:
                error = json.dumps({"error": {"message": "max_tokens=32 cannot be greater than max_model_len=16"}})
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error.encode())
                return
            answer = answers[body["messages"][-1]["content"]]
            events = [{"choices": [{"delta": {"role": "assistant"}}]},
                      {"choices": [{"delta": {"content": answer[:1]}}]},
                      {"choices": [{"delta": {"content": answer[1:]}}]}]
            payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload.encode())

        def log_message(self, *args: Any) -> None:
            pass

    return _serve(name, Handler)


@pytest.fixture(scope="module")
def answers() -> dict[str, str]:
    return {item.messages[-1]["content"]: item.reference for item in load_evalset(EVALSET).items}


@pytest.fixture
def fake_servers(answers: dict[str, str]) -> Iterator[Callable[[bool], tuple[str, str]]]:
    started: list[http.server.ThreadingHTTPServer] = []

    def start(canary_refuses: bool) -> tuple[str, str]:
        started.extend([_fake_openai("stable", answers, False), _fake_openai("canary", answers, canary_refuses)])
        return tuple(f"http://127.0.0.1:{s.server_port}" for s in started[-2:])  # type: ignore[return-value]

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@needs_nginx
def test_replay_window_attributes_times_and_scores_requests(fake_servers: Any, tmp_path: Path) -> None:
    stable_url, canary_url = fake_servers(True)
    items = load_evalset(EVALSET).items
    with NginxRouter(stable_url, canary_url, tmp_path / "nginx", nginx_bin=NGINX) as router:
        router.set_weights(50)
        window = replay_window(router.endpoint, "tiny-chat", items, duration_s=30, concurrency=4, max_requests=120)
    assert len(window.records) == 120 and window.unattributed == 0  # bounded by count before time
    assert [r.seq for r in window.records] == list(range(120))
    canary, stable = window.metrics("canary"), window.metrics("stable")
    assert canary.requests + stable.requests == 120 and 20 <= canary.requests <= 100
    assert canary.errors == canary.requests and canary.ttft_p95_ms is None
    assert (stable.errors, stable.quality_mean) == (0, 1.0) and stable.ttft_p95_ms > 0
    failed = next(r for r in window.records if r.backend == "canary")
    assert failed.status == 400 and "max_model_len=16" in failed.error


def _run_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, urls: tuple[str, str], *extra: str,
             spec: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("LLMOPS_XCOM_DIR", str(tmp_path / "xcom"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = spec or {"steps": [{"weight": 25, "window_s": 0.6}, {"weight": 50, "window_s": 0.6}],
                    "failure_limit": 1, "min_requests": 5, "max_ttft_p95_ratio": 100.0}
    code = canary_job.main(["--spec", json.dumps(spec), "--evalset", str(EVALSET), "--served-model", "tiny-chat",
                            "--stable-url", urls[0], "--canary-url", urls[1], "--work-dir", str(tmp_path / "nginx"),
                            "--nginx-bin", NGINX, "--concurrency", "2", *extra])
    assert not _alive_under(tmp_path / "nginx"), "nginx outlived the controller"
    return code, json.loads((tmp_path / "xcom" / "return.json").read_text())


@needs_nginx
def test_controller_promotes_a_healthy_canary(fake_servers: Any, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    code, result = _run_job(tmp_path, monkeypatch, fake_servers(False))
    assert (code, result["outcome"], result["final_weight"]) == (0, "promoted", 100)
    assert [(s["weight"], s["outcome"]) for s in result["steps"]] == [(25, "promote_step"), (50, "promote_step")]
    assert [c["canary"] for c in result["weight_changes"]] == [25, 50, 100]


@needs_nginx
def test_controller_rolls_back_a_failing_canary_with_exit_4(fake_servers: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    code, result = _run_job(tmp_path, monkeypatch, fake_servers(True))
    assert (code, result["outcome"], result["final_weight"]) == (4, "rolled_back", 0)
    assert [c["canary"] for c in result["weight_changes"]] == [25, 0]
    assert result["history"][0]["abort"] is True and result["history"][0]["outcome"] == "fail"
    assert 0 < result["breach_to_rollback_s"] < 2


@needs_nginx
def test_controller_stops_before_the_last_step_and_resumes(fake_servers: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    urls = fake_servers(False)
    code, result = _run_job(tmp_path / "first", monkeypatch, urls, "--stop-before-last-step")
    assert (code, result["outcome"], result["final_weight"], result["next_step"]) == (0, "awaiting_approval", 25, 1)
    code, result = _run_job(tmp_path / "resumed", monkeypatch, urls, "--from-step", str(result["next_step"]),
                            "--failures-so-far", str(result["failures"]))
    assert (code, result["outcome"], result["final_weight"]) == (0, "promoted", 100)
    assert [(s["step_index"], s["weight"]) for s in result["steps"]] == [(1, 50)]


@needs_nginx
def test_sigterm_routes_zero_percent_and_stops_nginx(fake_servers: Any, tmp_path: Path) -> None:
    """A pod being stopped mid-window: the controller routes 0% and nginx goes with it."""
    stable_url, canary_url = fake_servers(False)
    spec = {"steps": [{"weight": 25, "window_s": 60}], "min_requests": 5}
    log_path = tmp_path / "controller.log"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "plugins"), "LLMOPS_XCOM_DIR": str(tmp_path / "xcom"),
           "MLFLOW_TRACKING_URI": ""}
    with log_path.open("w") as log:
        controller = subprocess.Popen(
            [sys.executable, "-m", "llmops.jobs.canary", "--spec", json.dumps(spec), "--evalset", str(EVALSET),
             "--served-model", "m", "--stable-url", stable_url, "--canary-url", canary_url,
             "--work-dir", str(tmp_path / "nginx"), "--nginx-bin", NGINX, "--concurrency", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 30
        while "routed 25% to the canary" not in log_path.read_text():
            assert controller.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        controller.terminate()
        assert controller.wait(timeout=20) == 128 + 15
    finally:
        controller.kill()
    output = log_path.read_text()
    assert "routing 0% to the canary" in output and "could not route" not in output, output
    assert not _alive_under(tmp_path / "nginx"), "nginx outlived its controller"
    assert not (tmp_path / "xcom" / "return.json").exists()  # no outcome: the task fails


def test_controller_refuses_bad_arguments_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--evalset", str(EVALSET), "--served-model", "m", "--stable-url", "http://127.0.0.1:1",
            "--canary-url", "http://127.0.0.1:2"]
    for argv, message in [
        (["--spec", '{"steps": [{"weight": 0, "window_s": 1}]}'], "steps[0].weight"),
        (["--spec", "{not json"], "--spec: not valid JSON"),
        (["--spec", "{}", "--from-step", "3"], "--from-step: 3"),
        (["--spec", '{"failure_limit": 2}', "--failures-so-far", "2"], "--failures-so-far"),
        (["--spec", "{}", "--router", "gateway"], "--router gateway needs --route"),
    ]:
        with pytest.raises(SystemExit) as exited:
            canary_job.parse_args(argv + base)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


def test_resume_spec_keeps_the_failure_budget_and_moves_approval_to_the_flag() -> None:
    spec = CanarySpec.from_dict({"steps": [{"weight": 5, "window_s": 1}, {"weight": 25, "window_s": 1},
                                           {"weight": 50, "window_s": 1}], "failure_limit": 3,
                                 "require_approval": True})
    resumed = canary_job.resume_spec(spec, 1, 1, stop_before_last_step=False)
    assert [s.weight for s in resumed.steps] == [25, 50]
    assert (resumed.failure_limit, resumed.require_approval) == (2, False)


# -- the canary pod job -----------------------------------------------------------------------------

VLLM_IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "a1" * 32
JOBS_IMAGE = "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "b2" * 32
SPEC = {"steps": [{"weight": 5, "window_s": 60.0}, {"weight": 50, "window_s": 60.0}]}


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> settings_mod.Settings:
    """Digest-pinned images, as production sets them."""
    monkeypatch.setenv("LLMOPS_VLLM_IMAGE", VLLM_IMAGE)
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    return settings_mod.load()


def _canary_job(settings: settings_mod.Settings, hw_name: str = "cpu", **kwargs: Any) -> Any:
    hw = load_hardware_class(hw_name, settings.hardware_configs_dir)
    return canary_pod_job(settings, hw, stable_model_path="/models/{{ params.model }}/stable",
                          canary_model_path="/models/{{ params.model }}/canary", served_model_name="{{ params.model }}",
                          spec=SPEC, mlflow_tracking_uri="http://mlflow.llmops:5000",
                          stable_image=settings.vllm_image, canary_image=settings.vllm_image, **kwargs)


def test_canary_pod_job_has_two_probed_servers_and_the_controller(pinned: settings_mod.Settings) -> None:
    job = _canary_job(pinned, canary_extra_args=["--max-model-len", "16", "--seed=3"])
    stable, canary = job.sidecars
    assert (stable.name, canary.name) == (STABLE_CONTAINER, CANARY_CONTAINER)
    assert stable.readiness_probe.port_env == STABLE_PORT_ENV and canary.readiness_probe.port_env == CANARY_PORT_ENV
    assert set(job.ports) == {STABLE_PORT_ENV, CANARY_PORT_ENV}
    assert stable.args[stable.args.index("--port") + 1] == f"$({STABLE_PORT_ENV})"
    # The regression is the canary's only: the flag is replaced, not repeated.
    assert canary.args.count("--max-model-len") == 1 and canary.args[canary.args.index("--max-model-len") + 1] == "16"
    assert stable.args[stable.args.index("--max-model-len") + 1] == "512" and canary.args[-2:] == ("--seed", "3")
    main = job.main
    assert main.command == ("python", "-m", "llmops.jobs.canary") and main.image == JOBS_IMAGE
    args = list(main.args)
    assert args[args.index("--stable-url") + 1] == f"http://127.0.0.1:$({STABLE_PORT_ENV})"
    assert args[args.index("--canary-url") + 1] == f"http://127.0.0.1:$({CANARY_PORT_ENV})"
    assert CanarySpec.from_dict(json.loads(args[args.index("--spec") + 1])) == CanarySpec.from_dict(SPEC)
    # Start-up of both servers plus the worst-case windows fits in the deadline.
    assert job.timeout_s >= 2 * 300 + 120


def test_canary_pod_job_refuses_a_bad_spec_by_field(pinned: settings_mod.Settings) -> None:
    hw = load_hardware_class("cpu", pinned.hardware_configs_dir)
    with pytest.raises(ValueError, match=r"steps\[1\].weight"):
        canary_pod_job(pinned, hw, stable_model_path="/m/a", canary_model_path="/m/b", served_model_name="m",
                       spec={"steps": [{"weight": 50, "window_s": 1}, {"weight": 25, "window_s": 1}]},
                       stable_image=pinned.vllm_image, canary_image=pinned.vllm_image)


@pytest.mark.parametrize("hw_name", ["cpu", "h100x1"])
def test_canary_pod_renders_for_kubernetes_and_validates(pinned: settings_mod.Settings, hw_name: str) -> None:
    from airflow.sdk import DAG

    from llmops.launch.kubernetes import make_kubernetes_task, render_pod_manifest

    job = _canary_job(pinned, hw_name)
    with DAG(dag_id=f"test_canary_{hw_name}", params={"model": "tiny-chat"}, schedule=None):
        operator = make_kubernetes_task(job, task_id="canary")
    manifest = render_pod_manifest(operator, {"params": {"model": "tiny-chat"}})
    kubernetes_validate.validate(manifest, KUBERNETES_MIN_VERSION, strict=True)
    sidecars = {c["name"]: c for c in manifest["spec"]["initContainers"]}
    assert set(sidecars) == {STABLE_CONTAINER, CANARY_CONTAINER}
    for name, port in ((STABLE_CONTAINER, job.ports[STABLE_PORT_ENV]), (CANARY_CONTAINER, job.ports[CANARY_PORT_ENV])):
        assert sidecars[name]["restartPolicy"] == "Always"
        assert sidecars[name]["startupProbe"]["httpGet"] == {"path": "/health", "port": port}
        assert sidecars[name]["image"] == VLLM_IMAGE
    assert sidecars[CANARY_CONTAINER]["args"][0] == "/models/tiny-chat/canary"
    assert manifest["spec"]["activeDeadlineSeconds"] == job.timeout_s


def test_override_args_replaces_appends_and_refuses_values_without_flags() -> None:
    base = ("/m", "--max-model-len", "512", "--enforce-eager", "--dtype=float32")
    assert override_args(base, ["--max-model-len", "16", "--dtype", "bfloat16", "--seed", "1"]) == (
        "/m", "--max-model-len", "16", "--enforce-eager", "--dtype", "bfloat16", "--seed", "1")
    assert override_args(base, ["--enforce-eager"]) == base
    with pytest.raises(ValueError, match="canary_extra_args"):
        override_args(base, ["16"])
