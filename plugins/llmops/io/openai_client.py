"""A small client for an OpenAI-compatible server (vLLM): health wait and chat completions.

Plain ``urllib`` so that it runs in any image without extra dependencies.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


class ServerError(RuntimeError):
    """The server did not answer as an OpenAI-compatible server should."""


@dataclass(frozen=True)
class Completion:
    """One chat answer and how long it took."""

    text: str
    latency_s: float
    error: str | None = None


def wait_healthy(base_url: str, timeout_s: float = 300.0, period_s: float = 1.0) -> float:
    """Wait until ``<server>/health`` answers 200; return the seconds waited."""
    root = base_url.rstrip("/").removesuffix("/v1")
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{root}/health", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() - started > timeout_s:
            raise ServerError(f"{root}/health did not answer 200 within {timeout_s:.0f}s")
        time.sleep(period_s)


def chat(base_url: str, model: str, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
         timeout_s: float = 60.0) -> Completion:
    """One greedy chat completion; transport and server errors are returned, not raised."""
    body = json.dumps({"model": model, "messages": list(messages), "temperature": 0.0,
                       "max_tokens": max_tokens}).encode()
    request = urllib.request.Request(f"{base_url.rstrip('/')}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.loads(response.read())
        text = payload["choices"][0]["message"]["content"] or ""
        return Completion(text=text, latency_s=time.monotonic() - started)
    except (urllib.error.URLError, OSError, KeyError, IndexError, json.JSONDecodeError) as exc:
        return Completion(text="", latency_s=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")


def chat_many(base_url: str, model: str, prompts: Sequence[Sequence[dict[str, str]]], *,
              concurrency: int = 8, max_tokens: int = 64) -> list[Completion]:
    """Chat completions for many prompts, ``concurrency`` in flight, results in prompt order."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda m: chat(base_url, model, m, max_tokens=max_tokens), prompts))
