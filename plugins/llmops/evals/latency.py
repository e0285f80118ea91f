"""Serving latency seen by a client: TTFT and TPOT from streamed chat completions.

The qualify stage's latency gate needs the candidate's p99 time to first token and
time per output token on the target hardware class. Measured here by streaming
(``"stream": true``) and timing the server-sent chunks: what a user would see.
Fine for a gate on the same class and workload; the nightly benchmarks use
``vllm bench serve`` for the full matrix.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamTiming:
    """One streamed request: time to first token, time per output token after it, tokens."""

    ttft_ms: float | None
    tpot_ms: float | None
    output_chunks: int
    error: str | None = None


def stream_chat(base_url: str, model: str, messages: Sequence[dict[str, str]], *, max_tokens: int = 32,
                timeout_s: float = 60.0) -> StreamTiming:
    """Stream one greedy chat completion and time its chunks."""
    body = json.dumps({"model": model, "messages": list(messages), "temperature": 0.0, "max_tokens": max_tokens,
                       "stream": True}).encode()
    request = urllib.request.Request(f"{base_url.rstrip('/')}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    arrivals: list[float] = []
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            for raw in response:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                delta = (chunk.get("choices") or [{}])[0].get("delta", {})
                if delta.get("content"):
                    arrivals.append(time.perf_counter())
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        return StreamTiming(None, None, 0, error=f"{type(exc).__name__}: {exc}")
    if not arrivals:
        return StreamTiming(None, None, 0, error="no content chunk in the stream")
    ttft = (arrivals[0] - started) * 1000
    tpot = (arrivals[-1] - arrivals[0]) * 1000 / (len(arrivals) - 1) if len(arrivals) > 1 else None
    return StreamTiming(ttft_ms=ttft, tpot_ms=tpot, output_chunks=len(arrivals))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation, as numpy's default."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def measure_latency(base_url: str, model: str, prompts: Sequence[Sequence[dict[str, str]]], *,
                    concurrency: int = 4, max_tokens: int = 32) -> dict[str, float]:
    """p50/p99 TTFT and TPOT over ``prompts`` streamed ``concurrency`` at a time.

    A few unmeasured requests go first: the first requests of a fresh server pay one-off
    allocations that would otherwise land in the p99.
    """
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda m: stream_chat(base_url, model, m, max_tokens=max_tokens), prompts[:concurrency]))
        timings = list(pool.map(lambda m: stream_chat(base_url, model, m, max_tokens=max_tokens), prompts))
    ttft = [t.ttft_ms for t in timings if t.ttft_ms is not None]
    tpot = [t.tpot_ms for t in timings if t.tpot_ms is not None]
    errors = sum(1 for t in timings if t.error)
    result = {"requests": float(len(timings)), "errors": float(errors)}
    if ttft:
        result.update(ttft_p50_ms=percentile(ttft, 50), ttft_p99_ms=percentile(ttft, 99))
    if tpot:
        result.update(tpot_p50_ms=percentile(tpot, 50), tpot_p99_ms=percentile(tpot, 99))
    return result
