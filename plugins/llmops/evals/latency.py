"""Serving latency seen by a client: TTFT and TPOT from streamed chat completions.

The qualify stage's latency gate needs the candidate's p99 time to first token and
time per output token on the target hardware class. Measured here by streaming
(``"stream": true``) and timing the server-sent chunks: what a user would see
(:func:`llmops.io.openai_client.stream_chat`).
Fine for a gate on the same class and workload; the nightly benchmarks use
``vllm bench serve`` for the full matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

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


def _measured(stream: StreamResult) -> bool:
    """A stream counts when it completed and carried content; any other is an error."""
    return stream.ok and stream.tokens > 0
