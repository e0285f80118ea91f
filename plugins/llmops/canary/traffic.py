"""Replayed traffic through the router, measured per backend: what a canary step observes.

Eval-set prompts are sent to the router's endpoint (never to a backend directly) at a fixed
concurrency for one observation window, bounded by time and optionally by count. Each request
streams its answer so that the time to first token is what a user would see; the proxy's
``X-Llmops-Backend`` response header attributes the request to ``stable`` or ``canary``.
Because every replayed prompt is an eval item, a sample of the answers of both backends is
scored against the item's reference: that is the quality signal of the canary analysis (a
failed request scores 0).

:func:`window_metrics` turns the records of one window into the
:class:`~llmops.canary.analysis.WindowMetrics` of one side (pure); both sides share the window's
start and end, as :func:`llmops.canary.analysis.analyze_step` requires.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from llmops.canary.analysis import WindowMetrics
from llmops.evals.evalset import EvalItem
from llmops.evals.latency import percentile
from llmops.evals.scorers import SCORERS
from llmops.io.openai_client import stream_chat
from llmops.serving.routers import BACKEND_HEADER, CANARY, STABLE

SIDES = (CANARY, STABLE)


@dataclass(frozen=True)
class RequestRecord:
    """One replayed request: who answered, how fast, what, and its quality score if sampled.

    ``backend`` is None when no proxy header came back (the proxy itself was unreachable).
    ``score`` is None unless the request was sampled for quality; a failed request scores 0.
    """

    seq: int
    item_id: str
    backend: str | None
    started_s: float
    latency_ms: float
    ttft_ms: float | None
    status: int | None
    text: str
    error: str | None = None
    score: float | None = None

    @property
    def ok(self) -> bool:
        """True when the request succeeded (HTTP 200 and a complete stream without an error event)."""
        return self.error is None


@dataclass(frozen=True)
class Window:
    """The records of one observation window and its bounds (epoch seconds)."""

    start_s: float
    end_s: float
    records: tuple[RequestRecord, ...]

    def metrics(self, side: str) -> WindowMetrics:
        """``side``'s (``canary`` or ``stable``) metrics over this window."""
        return window_metrics(self.records, side, self.start_s, self.end_s)

    @property
    def unattributed(self) -> int:
        """Requests that no backend header attributed (the proxy did not answer)."""
        return sum(1 for r in self.records if r.backend not in SIDES)

    def summary(self) -> dict[str, Any]:
        """Per-side numbers for logs, MLflow and the job's result."""
        summary: dict[str, Any] = {"start_s": self.start_s, "end_s": self.end_s,
                                   "duration_s": round(self.end_s - self.start_s, 3),
                                   "requests": len(self.records), "unattributed": self.unattributed}
        for side in SIDES:
            m = self.metrics(side)
            ttft = [r.ttft_ms for r in self.records if r.backend == side and r.ttft_ms is not None]
            summary[side] = {
                "requests": m.requests, "errors": m.errors, "error_rate": m.error_rate,
                "ttft_p50_ms": percentile(ttft, 50) if ttft else None, "ttft_p95_ms": m.ttft_p95_ms,
                "quality_samples": m.quality_samples, "quality_mean": m.quality_mean,
                "first_errors": [r.error for r in self.records if r.backend == side and r.error][:3],
            }
        return summary


def window_metrics(records: Sequence[RequestRecord], side: str, start_s: float, end_s: float) -> WindowMetrics:
    """The :class:`WindowMetrics` of ``side`` from a window's records (pure).

    Errors are failed requests; TTFT p95 is over successful requests that streamed a token;
    quality is the mean score of the sampled requests, a failed one scoring 0.
    """
    if side not in SIDES:
        raise ValueError(f"side: {side!r} is not one of {SIDES}")
    mine = [r for r in records if r.backend == side]
    ttft = [r.ttft_ms for r in mine if r.ok and r.ttft_ms is not None and r.ttft_ms > 0]
    scores = [r.score for r in mine if r.score is not None]
    return WindowMetrics(
        requests=len(mine),
        errors=sum(1 for r in mine if not r.ok),
        ttft_p95_ms=percentile(ttft, 95) if ttft else None,
        quality_samples=len(scores),
        quality_mean=sum(scores) / len(scores) if scores else None,
        start_s=start_s,
        end_s=end_s,
    )


def traffic_order(items: Sequence[EvalItem]) -> list[EvalItem]:
    """Items interleaved across categories (a1, b1, c1, a2, ...), so any window sees every category."""
    groups: dict[str, list[EvalItem]] = {}
    for item in items:
        groups.setdefault(item.category, []).append(item)
    mixed = itertools.zip_longest(*groups.values())
    return [item for row in mixed for item in row if item is not None]


def sampled(seq: int, rate: float) -> bool:
    """Whether request ``seq`` is sampled for quality at ``rate`` (deterministic, evenly spread)."""
    if not 0 <= rate <= 1:
        raise ValueError(f"quality sample rate: {rate!r} is not a fraction in [0, 1]")
    return int((seq + 1) * rate) > int(seq * rate)


def stream_request(endpoint: str, model: str, item: EvalItem, *, seq: int = 0, max_tokens: int = 32,
                   timeout_s: float = 60.0, score: bool = True) -> RequestRecord:
    """Stream one greedy chat completion of ``item`` through the router and time its first token.

    Failures (HTTP status, transport, an error event in the stream, a stream without its
    ``[DONE]``) are returned as the record's ``error``, never raised: they are what the canary
    analysis counts. The request itself is :func:`llmops.io.openai_client.stream_chat`.
    """
    result = stream_chat(f"{endpoint.rstrip('/')}/v1", model, item.messages, max_tokens=max_tokens,
                         timeout_s=timeout_s)
    # A failed request is the worst answer a user can get: it scores 0 when sampled. Leaving it
    # out would let a canary that fails every request starve the quality check of samples, and
    # the analysis would hold (not enough data) instead of failing.
    item_score = None if not score else 0.0 if result.error else SCORERS[item.scorer](result.text, item.reference)
    return RequestRecord(seq=seq, item_id=item.id, backend=result.header(BACKEND_HEADER), started_s=result.started_s,
                         latency_ms=result.elapsed_s * 1000, ttft_ms=result.ttft_ms, status=result.status,
                         text=result.text, error=result.error, score=item_score)


def replay_window(endpoint: str, model: str, items: Sequence[EvalItem], *, duration_s: float,
                  concurrency: int = 4, max_requests: int | None = None, max_tokens: int = 32,
                  quality_sample_rate: float = 1.0, first_seq: int = 0, timeout_s: float = 60.0) -> Window:
    """Send ``items`` (cycled from ``first_seq``) through ``endpoint`` for ``duration_s`` seconds.

    ``concurrency`` requests are in flight at any time; no request starts after the deadline
    or beyond ``max_requests``, and the window ends when the last one has finished.
    """
    if not items:
        raise ValueError("items: no eval items to replay")
    if concurrency < 1:
        raise ValueError(f"concurrency: {concurrency!r} must be >= 1")
    if duration_s <= 0:
        raise ValueError(f"duration_s: {duration_s!r} must be positive")
    order = traffic_order(items)
    counter = itertools.count(first_seq)
    lock = threading.Lock()
    stop = threading.Event()
    start_s = time.time()
    deadline = time.monotonic() + duration_s
    limit = first_seq + max_requests if max_requests else None

    def next_seq() -> int | None:
        with lock:
            seq = next(counter)
        if stop.is_set() or time.monotonic() >= deadline or (limit is not None and seq >= limit):
            return None
        return seq

    def worker() -> list[RequestRecord]:
        done = []
        while (seq := next_seq()) is not None:
            item = order[seq % len(order)]
            done.append(stream_request(endpoint, model, item, seq=seq, max_tokens=max_tokens, timeout_s=timeout_s,
                                       score=sampled(seq, quality_sample_rate)))
        return done

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="canary-traffic") as pool:
        futures = [pool.submit(worker) for _ in range(concurrency)]
        try:
            records = [record for future in futures for record in future.result()]
        except BaseException:
            # Interrupted (SIGTERM, an error): start no new request, so that the caller's
            # rollback waits for the requests in flight only, not for the rest of the window.
            stop.set()
            raise
    records.sort(key=lambda r: r.seq)
    return Window(start_s=start_s, end_s=time.time(), records=tuple(records))


def records_as_rows(records: Sequence[RequestRecord]) -> list[dict[str, Any]]:
    """Records as plain dicts (an MLflow artifact for reviewing failures)."""
    return [asdict(r) for r in records]
