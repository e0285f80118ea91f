"""Parse the JSON that ``vllm bench serve --save-result`` writes into stable, named metrics.

The tool's keys (``p99_ttft_ms``, ``request_throughput``, ...) become the names of
:mod:`llmops.benchmarks.metrics`; percentiles it was not asked for are an error that says
which flag to add, not a silently missing chart. When the result was saved with
``--save-detailed`` (per-request TTFTs, latencies, output lengths, errors), goodput is
recomputed from those against the class SLOs (:mod:`llmops.benchmarks.goodput`) and the
per-request arrays are dropped from the summary (they are large; the pod keeps the file).

Standard library only: the benchmark pod job parses inside the vLLM image.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.benchmarks.goodput import RequestLatency, goodput
from llmops.benchmarks.metrics import LATENCIES, METRICS, PERCENTILES

# Per-request arrays of --save-detailed: summarised, never carried in XCom or MLflow params.
DETAIL_KEYS = ("input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times",
               "generated_texts", "errors")
_REQUIRED = ("duration", "completed", "request_throughput", "output_throughput", "total_token_throughput")
_FIX_PERCENTILES = ("run `vllm bench serve` with --percentile-metrics ttft,tpot,itl,e2el "
                    "--metric-percentiles 50,90,99")


class BenchResultError(ValueError):
    """A benchmark result that cannot be parsed; the message names the source, the field and the fix."""

    def __init__(self, source: str, field: str, problem: str, fix: str) -> None:
        self.source, self.field = source, field
        super().__init__(f"{source}: {field}: {problem}; fix: {fix}")


@dataclass(frozen=True)
class BenchResult:
    """One workload's result: stable metrics, the tool's summary (no per-request arrays), provenance."""

    metrics: dict[str, float]
    summary: dict[str, Any]
    requests: int
    goodput_slo_ms: dict[str, float]
    goodput_recomputed: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"metrics": self.metrics, "summary": self.summary, "requests": self.requests,
                "goodput_slo_ms": self.goodput_slo_ms, "goodput_recomputed": self.goodput_recomputed}


def load(path: str | Path, goodput_slo_ms: Mapping[str, float] | None = None) -> BenchResult:
    """Parse a result file (see :func:`parse`)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BenchResultError(str(path), "(file)", f"not valid JSON: {exc}",
                               "use the file `vllm bench serve --save-result` wrote") from exc
    return parse(raw, str(path), goodput_slo_ms)


def parse(raw: Any, source: str = "result", goodput_slo_ms: Mapping[str, float] | None = None) -> BenchResult:
    """Turn a ``vllm bench serve`` result into :class:`BenchResult`.

    ``goodput_slo_ms`` (``{"ttft": 1000, "tpot": 100}``): the SLOs goodput is judged against.
    With per-request details, goodput is recomputed from them; otherwise the tool's own
    ``request_goodput`` is used (and is missing when the tool ran without ``--goodput``).
    """
    if not isinstance(raw, dict):
        raise BenchResultError(source, "(file)", "expected a JSON object", "use a `vllm bench serve` result file")
    for key in _REQUIRED:
        if not _is_number(raw.get(key)):
            raise BenchResultError(source, key, f"missing or not a number (got {raw.get(key)!r})",
                                   "use the JSON written by `vllm bench serve --save-result`")
    if raw["duration"] <= 0:
        raise BenchResultError(source, "duration", f"{raw['duration']!r} is not positive",
                               "the benchmark did not run: check its log")
    for latency in LATENCIES:
        for pct in PERCENTILES:
            key = f"p{pct}_{latency}_ms"
            if not _is_number(raw.get(key)):
                raise BenchResultError(source, key, "missing", _FIX_PERCENTILES)
    metrics: dict[str, float] = {}
    for spec in METRICS:
        value = raw.get(spec.source_key)
        if _is_number(value):
            metrics[spec.name] = float(value)
    slo = dict(goodput_slo_ms or {})
    recomputed = None
    requests = int(raw["completed"]) + int(raw.get("failed") or 0)
    if all(isinstance(raw.get(k), list) for k in ("ttfts", "latencies", "output_lens", "errors")):
        per_request = _requests(raw, source)
        requests = len(per_request)
        if slo:
            recomputed = goodput(per_request, slo, float(raw["duration"]))
            metrics["goodput_rps"] = recomputed
    if "failed" not in metrics:
        metrics["failed"] = float(requests - int(raw["completed"]))
    summary = {k: v for k, v in raw.items() if k not in DETAIL_KEYS}
    return BenchResult(metrics=metrics, summary=summary, requests=requests, goodput_slo_ms=slo,
                       goodput_recomputed=recomputed)


def _requests(raw: dict[str, Any], source: str) -> list[RequestLatency]:
    lengths = {k: len(raw[k]) for k in ("ttfts", "latencies", "output_lens", "errors")}
    if len(set(lengths.values())) != 1:
        raise BenchResultError(source, "ttfts/latencies/output_lens/errors",
                               f"per-request arrays differ in length {lengths}",
                               "use an unmodified `--save-detailed` result file")
    return [RequestLatency(success=not error, ttft_s=float(ttft or 0.0), latency_s=float(latency or 0.0),
                           output_tokens=int(tokens or 0))
            for ttft, latency, tokens, error in zip(raw["ttfts"], raw["latencies"], raw["output_lens"],
                                                    raw["errors"], strict=True)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
