"""Goodput: requests per second that met every latency SLO of the hardware class (pure).

The definition of DistServe (and of ``vllm bench serve --goodput``): a request is *good* when
it succeeded and its TTFT, its TPOT (time per output token after the first,
``(latency - ttft) / (output_tokens - 1)``, 0 for a one-token answer) and, when given, its
end-to-end latency are each at or under their objective. Goodput = good requests / wall time.

Recomputed here from the per-request data that ``vllm bench serve --save-detailed`` writes, so
goodput can be judged against SLOs other than the ones the benchmark was run with, and checked
against the tool's own ``request_goodput``. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SLO_KEYS = ("ttft", "tpot", "e2el")


@dataclass(frozen=True)
class RequestLatency:
    """One request of a benchmark, in seconds (as the tool records it)."""

    success: bool
    ttft_s: float
    latency_s: float
    output_tokens: int

    @property
    def tpot_s(self) -> float:
        """Time per output token after the first; 0 when fewer than two tokens came back."""
        if self.output_tokens <= 1:
            return 0.0
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)


def meets_slo(request: RequestLatency, slo_ms: Mapping[str, float]) -> bool:
    """Whether ``request`` succeeded and met every objective in ``slo_ms`` (milliseconds)."""
    unknown = set(slo_ms) - set(SLO_KEYS)
    if unknown:
        raise ValueError(f"unknown SLO keys {sorted(unknown)}; use {list(SLO_KEYS)}")
    if not request.success:
        return False
    observed_ms = {"ttft": request.ttft_s * 1000.0, "tpot": request.tpot_s * 1000.0,
                   "e2el": request.latency_s * 1000.0}
    return all(observed_ms[key] <= limit for key, limit in slo_ms.items())


def good_requests(requests: Sequence[RequestLatency], slo_ms: Mapping[str, float]) -> int:
    """How many requests met every objective."""
    return sum(1 for r in requests if meets_slo(r, slo_ms))


def goodput(requests: Sequence[RequestLatency], slo_ms: Mapping[str, float], duration_s: float) -> float:
    """Good requests per second of ``duration_s``."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    return good_requests(requests, slo_ms) / duration_s
