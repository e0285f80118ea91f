"""Serving latency seen by a client: TTFT and TPOT from streamed chat completions.

The qualify stage's latency gate needs the candidate's p99 time to first token and
time per output token on the target hardware class. Measured here by streaming
(``"stream": true``) and timing the server-sent chunks: what a user would see
(:func:`llmops.io.openai_client.stream_chat`).
Fine for a gate on the same class and workload; the nightly benchmarks use
``vllm bench serve`` for the full matrix.

On a class whose CPU cores are shared (``slo.shared_cpu``), one p99 over a few dozen requests
is mostly the slowest request, and a neighbour's burst decides it: :func:`measure_latency_rounds`
measures ``slo.latency_rounds`` rounds, paused apart so that one burst rarely spans several, and
reports each round's p99s for the gate to take their median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmops.io.openai_client import StreamResult, stream_chat


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
    allocations that would otherwise land in the p99. A request that failed (HTTP error,
    transport, an error event, no ``[DONE]``) or streamed no content is counted in ``errors``
    and left out of the percentiles.
    """
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda m: stream_chat(base_url, model, m, max_tokens=max_tokens), prompts[:concurrency]))
        streams = list(pool.map(lambda m: stream_chat(base_url, model, m, max_tokens=max_tokens), prompts))
    timed = [s for s in streams if _measured(s)]
    ttft = [s.ttft_ms for s in timed if s.ttft_ms is not None]
    tpot = [s.tpot_ms for s in timed if s.tpot_ms is not None]
    errors = len(streams) - len(timed)
    result = {"requests": float(len(streams)), "errors": float(errors)}
    if ttft:
        result.update(ttft_p50_ms=percentile(ttft, 50), ttft_p99_ms=percentile(ttft, 99))
    if tpot:
        result.update(tpot_p50_ms=percentile(tpot, 50), tpot_p99_ms=percentile(tpot, 99))
    return result


PERCENTILE_KEYS = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")


def measure_latency_rounds(base_url: str, model: str, prompts: Sequence[Sequence[dict[str, str]]], *,
                           rounds: int = 1, concurrency: int = 4, max_tokens: int = 32, pause_s: float = 1.0,
                           measure: Callable[..., dict[str, float]] = measure_latency,
                           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """:func:`measure_latency` once (``rounds`` 1: the same result, unchanged), or ``rounds`` times.

    In rounds, ``pause_s`` apart: ``rounds`` holds each round's result (its own warm-up, count,
    errors, p50 and p99); the top level has the requests and errors of all rounds, each
    percentile's median over the rounds that measured it, and ``latency_rounds``. The gate
    judges the rounds' p99s itself (their median); the top-level medians are what MLflow shows.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if rounds == 1:
        return measure(base_url, model, prompts, concurrency=concurrency, max_tokens=max_tokens)
    per_round: list[dict[str, float]] = []
    for index in range(rounds):
        if index:
            sleep(pause_s)
        per_round.append(measure(base_url, model, prompts, concurrency=concurrency, max_tokens=max_tokens))
    result: dict[str, Any] = {"requests": sum(r["requests"] for r in per_round),
                              "errors": sum(r["errors"] for r in per_round), "latency_rounds": float(rounds)}
    for key in PERCENTILE_KEYS:
        values = [r[key] for r in per_round if key in r]
        if values:
            result[key] = statistics.median(values)
    result["rounds"] = per_round
    return result


def _measured(stream: StreamResult) -> bool:
    """A stream counts when it completed and carried content; any other is an error."""
    return stream.ok and stream.tokens > 0
