"""Stable benchmark metric names, their units and which direction is better.

The MLflow UI charts a metric by its name across runs, so names never change with the tool
that produced them: ``vllm bench serve`` calls it ``p99_ttft_ms``, we record ``ttft_p99_ms``
under the ``bench/`` prefix whatever the client was. Standard library only (the benchmark pod
job imports this inside the vLLM image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher_is_better", "lower_is_better"]

PREFIX = "bench/"
LATENCIES: tuple[str, ...] = ("ttft", "tpot", "itl", "e2el")
"""Time to first token, time per output token, inter-token latency, end-to-end request latency."""
PERCENTILES: tuple[int, ...] = (50, 90, 99)


@dataclass(frozen=True)
class MetricSpec:
    """One recorded metric: its stable name, where ``vllm bench serve`` puts it, its unit and direction."""

    name: str
    source_key: str
    unit: str
    direction: Direction
    description: str


def _latency_specs() -> list[MetricSpec]:
    specs = []
    for latency in LATENCIES:
        specs.append(MetricSpec(f"{latency}_mean_ms", f"mean_{latency}_ms", "ms", "lower_is_better",
                                f"mean {latency.upper()}"))
        for pct in PERCENTILES:
            specs.append(MetricSpec(f"{latency}_p{pct}_ms", f"p{pct}_{latency}_ms", "ms", "lower_is_better",
                                    f"p{pct} {latency.upper()}"))
    return specs


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("request_throughput_rps", "request_throughput", "req/s", "higher_is_better",
               "completed requests per second"),
    MetricSpec("output_throughput_tps", "output_throughput", "tok/s", "higher_is_better",
               "generated tokens per second"),
    MetricSpec("total_token_throughput_tps", "total_token_throughput", "tok/s", "higher_is_better",
               "prompt + generated tokens per second"),
    MetricSpec("goodput_rps", "request_goodput", "req/s", "higher_is_better",
               "requests per second that met every SLO of the class (TTFT and TPOT)"),
    *_latency_specs(),
    MetricSpec("completed", "completed", "requests", "higher_is_better", "requests that completed"),
    MetricSpec("failed", "failed", "requests", "lower_is_better", "requests that failed"),
    MetricSpec("duration_s", "duration", "s", "lower_is_better", "wall time of the workload"),
)
BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}

# What the regression check watches by default: throughput (a drop is a regression) and the
# tail latencies (a rise is). Means and medians are recorded for people, not gated.
GATED: tuple[str, ...] = (
    "request_throughput_rps", "output_throughput_tps", "goodput_rps",
    "ttft_p99_ms", "tpot_p99_ms", "itl_p99_ms", "e2el_p99_ms",
)


def mlflow_key(name: str) -> str:
    """``ttft_p99_ms`` -> ``bench/ttft_p99_ms`` (the MLflow metric key)."""
    if name not in BY_NAME:
        raise KeyError(f"unknown benchmark metric {name!r}; known: {sorted(BY_NAME)}")
    return PREFIX + name


def direction(name: str) -> Direction:
    """Whether a larger value of ``name`` is better or worse."""
    return BY_NAME[name].direction
