"""The one client for an OpenAI-compatible server (vLLM): health wait, chat, streamed chat.

* :func:`wait_healthy` waits until ``<server>/health`` answers 200;
* :func:`chat` / :func:`chat_many`: greedy, non-streaming chat completions (the eval job);
* :func:`stream_chat`: one greedy streamed chat completion, timed chunk by chunk (TTFT, the
  times between tokens, the token count) as a user would see it: the canary's replayed traffic
  and the qualify stage's latency measurement.

Request failures are returned in the result's ``error``, never raised: callers count them.
An HTTP error answer is reported with the server's own message (``HTTP 400: max_tokens ...``,
from its JSON ``{"error": {"message": ...}}`` body), an ``error`` event inside a stream as
``error event in the stream: ...``, and a stream that ends or breaks off before its
``data: [DONE]`` line as such.

Standard library only (``urllib``): the benchmark, evaluation and canary pod jobs run it inside
the vLLM runtime image, where only the standard library and this package exist. Do not import
airflow, boto3, mlflow or anything outside the standard library here.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

DONE_MISSING = "the stream ended before its [DONE] event"

_TRANSPORT_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


class ServerError(RuntimeError):
    """The server did not answer as an OpenAI-compatible server should."""


class MalformedEventError(ValueError):
    """A server-sent event of a chat stream that is not a JSON object."""


@dataclass(frozen=True)
class Completion:
    """One chat answer and how long it took."""

    text: str
    latency_s: float
    error: str | None = None
    unreachable: bool = False
    """The server could not be reached or was unavailable (connection refused or reset, a
    timeout, HTTP 502/503/504): an outage, not an answer; an eval must not score it."""


UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class StreamResult:
    """One streamed chat completion: what came back, when, and how it failed if it did.

    ``token_times_s`` holds, for every chunk that carried content (one token each from vLLM),
    its arrival in seconds after the request was sent. ``text`` is the content received, also
    when the request failed part way. ``status`` and ``headers`` (lower-case names) are those of
    the HTTP answer, error answers included; None and empty when no answer came back.
    """

    text: str
    started_s: float
    elapsed_s: float
    token_times_s: tuple[float, ...] = ()
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True for HTTP 200 and a complete stream (``[DONE]``) without an error event."""
        return self.error is None

    @property
    def tokens(self) -> int:
        """Chunks that carried content."""
        return len(self.token_times_s)

    @property
    def ttft_ms(self) -> float | None:
        """Time to first token in milliseconds; None when no content arrived."""
        return self.token_times_s[0] * 1000 if self.token_times_s else None

    @property
    def inter_token_s(self) -> tuple[float, ...]:
        """Seconds between consecutive content chunks."""
        times = self.token_times_s
        return tuple(b - a for a, b in zip(times, times[1:], strict=False))

    @property
    def tpot_ms(self) -> float | None:
        """Mean time per output token after the first, in milliseconds; None below two tokens."""
        times = self.token_times_s
        return (times[-1] - times[0]) * 1000 / (len(times) - 1) if len(times) > 1 else None

    def header(self, name: str) -> str | None:
        """A response header (case-insensitive), or None."""
        return self.headers.get(name.lower())


def wait_healthy(base_url: str, timeout_s: float = 300.0, period_s: float = 1.0) -> float:
    """Wait until ``<server>/health`` answers 200; return the seconds waited.

    ``base_url`` is the server (``http://host:port``) or its OpenAI base (``.../v1``). Raises
    :class:`ServerError`, naming the last answer or failure seen, after ``timeout_s``.
    """
    root = base_url.rstrip("/").removesuffix("/v1")
    started = time.monotonic()
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(f"{root}/health", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except _TRANSPORT_ERRORS as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - started > timeout_s:
            raise ServerError(f"{root}/health did not answer 200 within {timeout_s:.0f}s (last: {last})")
        time.sleep(period_s)


def chat(base_url: str, model: str, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
         timeout_s: float = 60.0) -> Completion:
    """One greedy chat completion; transport and server errors are returned, not raised."""
    request = _chat_request(base_url, model, messages, max_tokens=max_tokens, stream=False)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.loads(response.read())
        text = payload["choices"][0]["message"]["content"] or ""
        return Completion(text=text, latency_s=time.monotonic() - started)
    except urllib.error.HTTPError as exc:
        return Completion(text="", latency_s=time.monotonic() - started,
                          error=f"HTTP {exc.code}: {_http_error_detail(exc)}",
                          unreachable=exc.code in UNAVAILABLE_STATUSES)
    except _TRANSPORT_ERRORS as exc:
        return Completion(text="", latency_s=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}",
                          unreachable=True)
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        return Completion(text="", latency_s=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")


def chat_many(base_url: str, model: str, prompts: Sequence[Sequence[dict[str, str]]], *,
              concurrency: int = 8, max_tokens: int = 64) -> list[Completion]:
    """Chat completions for many prompts, ``concurrency`` in flight, results in prompt order."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda m: chat(base_url, model, m, max_tokens=max_tokens), prompts))


def stream_chat(base_url: str, model: str, messages: Sequence[dict[str, str]], *, max_tokens: int = 32,
                timeout_s: float = 60.0) -> StreamResult:
    """Stream one greedy chat completion (``"stream": true``) and time its content chunks.

    Failures (HTTP status, transport, an error event in the stream, a stream without its
    ``[DONE]``) are returned as the result's ``error``, never raised.
    """
    request = _chat_request(base_url, model, messages, max_tokens=max_tokens, stream=True)
    started_s, started = time.time(), time.perf_counter()
    status: int | None = None
    headers: dict[str, str] = {}
    times: list[float] = []
    parts: list[str] = []
    error: str | None = None
    streaming = False
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, headers = response.status, _headers(response.headers)
            streaming = True
            finished = False
            for kind, value in _sse_events(response):
                if kind == "error":
                    error = f"error event in the stream: {value}"
                    break
                if kind == "done":
                    finished = True
                    break
                if value:
                    times.append(time.perf_counter() - started)
                parts.append(value)
            if error is None and not finished:
                error = DONE_MISSING
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, _headers(exc.headers)
        error = f"HTTP {exc.code}: {_http_error_detail(exc)}"
    except (json.JSONDecodeError, MalformedEventError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    except _TRANSPORT_ERRORS as exc:
        detail = f"{type(exc).__name__}: {exc}"
        error = f"the stream broke off before its [DONE] event: {detail}" if streaming else detail
    return StreamResult(text="".join(parts), started_s=started_s, elapsed_s=time.perf_counter() - started,
                        token_times_s=tuple(times), status=status, headers=headers, error=error)


def _chat_request(base_url: str, model: str, messages: Sequence[dict[str, str]], *, max_tokens: int,
                  stream: bool) -> urllib.request.Request:
    payload: dict[str, Any] = {"model": model, "messages": list(messages), "temperature": 0.0,
                               "max_tokens": max_tokens}
    if stream:
        payload["stream"] = True
    return urllib.request.Request(f"{base_url.rstrip('/')}/chat/completions", data=json.dumps(payload).encode(),
                                  headers={"Content-Type": "application/json"})


def _headers(message: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in message.items()} if message is not None else {}


def _sse_events(response: Any) -> Iterator[tuple[str, str]]:
    """``("delta", text)``, ``("error", message)`` or ``("done", "")`` per server-sent event of a chat stream."""
    for raw in response:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield "done", ""
            return
        event = json.loads(data)
        if not isinstance(event, dict):
            raise MalformedEventError(f"event is not a JSON object: {data[:100]}")
        if "error" in event:
            error = event["error"]
            yield "error", str((error.get("message") if isinstance(error, dict) else error) or "unknown error")
            return
        choice = (event.get("choices") or [{}])[0]
        delta = (choice.get("delta") if isinstance(choice, dict) else None) or {}
        yield "delta", (delta.get("content") if isinstance(delta, dict) else None) or ""


def _http_error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's message from an HTTP error answer (its JSON ``error``), else the body's start."""
    try:
        payload = exc.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):
        return str(exc.reason or "")
    try:
        message = json.loads(payload).get("error", {})
        message = message.get("message") if isinstance(message, dict) else message
        return str(message or payload)[:300]
    except (json.JSONDecodeError, AttributeError):
        return payload[:300] or str(exc.reason or "")
