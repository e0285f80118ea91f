"""The one OpenAI-compatible client, against a real local HTTP server speaking the protocol.

The server (``http.server`` on 127.0.0.1, a free port) answers ``/health`` and
``/v1/chat/completions``, streaming with server-sent events in chunked transfer encoding as vLLM
does. The request's ``model`` picks the behaviour: a healthy answer, an ``error`` event in the
stream, an HTTP error with a JSON body, a connection dropped mid-stream, a stream without
``[DONE]``, an event that is not JSON.
"""

from __future__ import annotations

import http.server
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmops.canary.traffic import stream_request
from llmops.evals.evalset import EvalItem
from llmops.evals.latency import measure_latency
from llmops.io import openai_client
from llmops.io.openai_client import ServerError, chat, chat_many, stream_chat, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ("The", " answer", " is", " 42")
FIRST_TOKEN_DELAY_S = 0.05
TOKEN_GAP_S = 0.1
MESSAGES = [{"role": "user", "content": "What is 6*7?"}]


class _OpenAI(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    healthy = True
    requests: list[dict[str, Any]]

    def do_GET(self) -> None:
        if self.path != "/health":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
        elif type(self).healthy:
            self._json(200, {})
        else:
            self._json(503, {"error": {"message": "loading the weights"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        model = body["model"]
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
        elif model == "http-400":
            self._json(400, {"object": "error", "message": "ignored", "type": "BadRequestError",
                             "error": {"message": "max_tokens=32 cannot be greater than max_model_len=16",
                                       "code": 400}})
        elif model == "http-503":
            self._json(503, {"error": "the engine is overloaded"})
        elif model == "http-502-text":
            self._raw(502, b"<html>bad gateway</html>", "text/html")
        elif not body.get("stream"):
            self._json(200, {"id": "c1", "object": "chat.completion", "model": model,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(TOKENS)},
                                          "finish_reason": "stop"}]})
        else:
            self._stream(model)

    def _stream(self, model: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Llmops-Backend", "canary")
        self.end_headers()
        self._event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        time.sleep(FIRST_TOKEN_DELAY_S)
        for i, token in enumerate(TOKENS):
            if i:
                time.sleep(TOKEN_GAP_S)
            self._event({"choices": [{"index": 0, "delta": {"content": token}}]})
            if model == "sse-error" and i == 1:
                self._event({"error": {"message": "the engine died", "type": "InternalServerError", "code": 500}})
                return self._end()
            if model == "drop" and i == 1:
                # No terminating chunk: the connection is closed mid-stream.
                self.close_connection = True
                return None
            if model == "reset" and i == 1:
                # Closed with a TCP reset, as when the server process dies.
                time.sleep(0.1)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return None
            if model == "not-json" and i == 1:
                self._chunk(b"data: {not json\n\n")
                return self._end()
        if model != "no-done":
            self._chunk(b"data: [DONE]\n\n")
        return self._end()

    def _event(self, event: dict[str, Any]) -> None:
        self._chunk(f"data: {json.dumps(event)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, status: int, payload: dict[str, Any] | str) -> None:
        self._raw(status, json.dumps(payload).encode(), "application/json")

    def _raw(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_OpenAI]]]:
    """A fresh server (its own handler class, so its state is its own); yields its root URL."""
    handler = type("Handler", (_OpenAI,), {"healthy": True, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


# -- health ---------------------------------------------------------------------------------------


def test_wait_healthy_returns_once_health_answers_200(server: tuple[str, type[_OpenAI]]) -> None:
    root, handler = server
    handler.healthy = False
    threading.Timer(0.3, lambda: setattr(handler, "healthy", True)).start()
    waited = wait_healthy(f"{root}/v1", timeout_s=10, period_s=0.05)  # the /v1 base works too
    assert 0.25 <= waited < 5
    assert wait_healthy(root, timeout_s=1) < 1


def test_wait_healthy_times_out_naming_the_last_answer(server: tuple[str, type[_OpenAI]]) -> None:
    root, handler = server
    handler.healthy = False
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"/health did not answer 200 within 0s \(last: HTTP 503\)"):
        wait_healthy(root, timeout_s=0.3, period_s=0.05)
    assert time.monotonic() - started < 3


def test_wait_healthy_times_out_when_nothing_listens(server: tuple[str, type[_OpenAI]]) -> None:
    root, _ = server
    closed = root.rsplit(":", 1)[0] + ":1"
    with pytest.raises(ServerError, match=r"127.0.0.1:1/health did not answer 200.*last: URLError"):
        wait_healthy(closed, timeout_s=0.2, period_s=0.05)


# -- streamed chat --------------------------------------------------------------------------------


def test_stream_chat_times_every_token(server: tuple[str, type[_OpenAI]]) -> None:
    root, handler = server
    before = time.time()
    result = stream_chat(f"{root}/v1", "ok", MESSAGES, max_tokens=8)
    assert result.ok and result.error is None and result.status == 200
    assert result.text == "The answer is 42" and result.tokens == len(TOKENS)
    assert result.header("x-llmops-backend") == result.header("X-Llmops-Backend") == "canary"
    # The role-only first chunk is not a token: TTFT is the first content.
    assert FIRST_TOKEN_DELAY_S * 1000 * 0.8 <= result.ttft_ms < 2000
    assert len(result.inter_token_s) == len(TOKENS) - 1
    assert all(0 < gap < 2 for gap in result.inter_token_s)
    assert result.tpot_ms == pytest.approx(sum(result.inter_token_s) * 1000 / (len(TOKENS) - 1))
    assert result.tpot_ms >= TOKEN_GAP_S * 1000 * 0.7  # the server waits TOKEN_GAP_S between tokens
    assert result.elapsed_s >= result.token_times_s[-1] and before <= result.started_s <= time.time()
    assert handler.requests[-1] == {"model": "ok", "messages": MESSAGES, "temperature": 0.0, "max_tokens": 8,
                                    "stream": True}


def test_stream_chat_reports_an_error_event_with_its_message(server: tuple[str, type[_OpenAI]]) -> None:
    root, _ = server
    result = stream_chat(f"{root}/v1", "sse-error", MESSAGES)
    assert not result.ok and result.error == "error event in the stream: the engine died"
    assert result.status == 200 and result.text == "The answer" and result.tokens == 2  # what came before


@pytest.mark.parametrize(("model", "status", "message"), [
    ("http-400", 400, "HTTP 400: max_tokens=32 cannot be greater than max_model_len=16"),
    ("http-503", 503, "HTTP 503: the engine is overloaded"),
    ("http-502-text", 502, "HTTP 502: <html>bad gateway</html>"),
])
def test_http_errors_carry_the_servers_message(server: tuple[str, type[_OpenAI]], model: str, status: int,
                                               message: str) -> None:
    root, _ = server
    streamed = stream_chat(f"{root}/v1", model, MESSAGES)
    assert (streamed.status, streamed.error, streamed.text, streamed.ttft_ms) == (status, message, "", None)
    assert streamed.header("content-type") is not None
    completion = chat(f"{root}/v1", model, MESSAGES)
    assert (completion.text, completion.error) == ("", message)
    # A gateway or overloaded server is an outage (not scored by an eval); a 400 is an answer.
    assert completion.unreachable is (status in (502, 503, 504))


def test_a_connection_dropped_mid_stream_is_an_error_not_an_exception(server: tuple[str, type[_OpenAI]]) -> None:
    root, _ = server
    result = stream_chat(f"{root}/v1", "drop", MESSAGES)
    # Closed after a complete chunk: urllib reads it as the end of the stream.
    assert (result.ok, result.status, result.error) == (False, 200, "the stream ended before its [DONE] event")
    assert result.text == "The answer" and result.tokens == 2
    result = stream_chat(f"{root}/v1", "reset", MESSAGES)
    assert not result.ok and result.status == 200
    assert result.error.startswith("the stream broke off before its [DONE] event: ConnectionResetError: ")


def test_a_stream_without_done_or_with_a_bad_event_is_an_error(server: tuple[str, type[_OpenAI]]) -> None:
    root, _ = server
    result = stream_chat(f"{root}/v1", "no-done", MESSAGES)
    assert result.error == "the stream ended before its [DONE] event" and result.text == "The answer is 42"
    result = stream_chat(f"{root}/v1", "not-json", MESSAGES)
    assert result.error.startswith("JSONDecodeError: ") and result.text == "The answer"


def test_nothing_listening_is_a_transport_error(server: tuple[str, type[_OpenAI]]) -> None:
    root, _ = server
    closed = root.rsplit(":", 1)[0] + ":1/v1"
    result = stream_chat(closed, "ok", MESSAGES, timeout_s=2)
    assert result.error.startswith("URLError: ") and result.status is None and result.headers == {}
    refused = chat(closed, "ok", MESSAGES, timeout_s=2)
    assert refused.error.startswith("URLError: ") and refused.unreachable


# -- non-streamed chat ----------------------------------------------------------------------------


def test_chat_and_chat_many(server: tuple[str, type[_OpenAI]]) -> None:
    root, handler = server
    completion = chat(f"{root}/v1", "ok", MESSAGES, max_tokens=5)
    assert completion.text == "The answer is 42" and completion.error is None and completion.latency_s > 0
    assert not completion.unreachable
    assert handler.requests[-1] == {"model": "ok", "messages": MESSAGES, "temperature": 0.0, "max_tokens": 5}
    prompts = [[{"role": "user", "content": str(i)}] for i in range(6)]
    done = chat_many(f"{root}/v1", "ok", prompts, concurrency=3)
    assert [c.text for c in done] == ["The answer is 42"] * 6
    assert sorted(r["messages"][0]["content"] for r in handler.requests[-6:]) == [str(i) for i in range(6)]


# -- the callers keep their result shapes ---------------------------------------------------------


def test_canary_request_record_from_a_stream(server: tuple[str, type[_OpenAI]]) -> None:
    root, _ = server
    item = EvalItem("a-1", "arithmetic", tuple(MESSAGES), "The answer is 42", "exact_match")
    ok = stream_request(root, "ok", item, seq=7)
    assert (ok.seq, ok.item_id, ok.backend, ok.status, ok.text, ok.error, ok.score) == (
        7, "a-1", "canary", 200, "The answer is 42", None, 1.0)
    assert ok.ok and 0 < ok.ttft_ms < ok.latency_ms
    failed = stream_request(root, "sse-error", item, seq=8)
    assert (failed.ok, failed.score, failed.error) == (False, 0.0, "error event in the stream: the engine died")
    refused = stream_request(root, "http-400", item, score=False)
    assert (refused.status, refused.ttft_ms, refused.score) == (400, None, None)
    assert "max_model_len=16" in refused.error


def test_measure_latency_counts_failures_as_errors(server: tuple[str, type[_OpenAI]]) -> None:
    root, _ = server
    latency = measure_latency(f"{root}/v1", "ok", [MESSAGES] * 4, concurrency=4)
    assert set(latency) == {"requests", "errors", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms"}
    assert (latency["requests"], latency["errors"]) == (4.0, 0.0)
    assert latency["tpot_p50_ms"] >= TOKEN_GAP_S * 1000 * 0.7
    assert measure_latency(f"{root}/v1", "http-400", [MESSAGES] * 2, concurrency=2) == {"requests": 2.0,
                                                                                       "errors": 2.0}


# -- standard library only ------------------------------------------------------------------------


def test_the_client_imports_only_the_standard_library() -> None:
    """It runs inside the vLLM runtime image: no airflow, boto3, mlflow, yaml there."""
    code = ("import sys; import llmops.io.openai_client, llmops.evals.latency; "
            "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'plugins')!r}); "
                          + code], capture_output=True, text=True, check=True).stdout.split()
    outside = [m for m in out if m not in sys.stdlib_module_names and m != "llmops" and not m.startswith("_")]
    assert not outside, f"non-standard-library modules imported: {outside}"
    assert openai_client.__doc__ and "Standard library only" in openai_client.__doc__
