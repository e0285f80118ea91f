"""Goodput under the class SLOs, recomputed from per-request latencies (pure)."""

from __future__ import annotations

import pytest

from llmops.benchmarks.goodput import RequestLatency, good_requests, goodput, meets_slo


def req(ttft_ms: float, latency_ms: float, tokens: int, success: bool = True) -> RequestLatency:
    return RequestLatency(success=success, ttft_s=ttft_ms / 1000, latency_s=latency_ms / 1000, output_tokens=tokens)


def test_tpot_is_the_time_after_the_first_token_per_further_token() -> None:
    assert req(100, 1000, 10).tpot_s == pytest.approx(0.1)
    assert req(100, 1000, 1).tpot_s == 0.0
    assert req(100, 1000, 0).tpot_s == 0.0


def test_a_request_is_good_only_when_every_objective_is_met() -> None:
    slo = {"ttft": 200, "tpot": 50}
    assert meets_slo(req(150, 150 + 9 * 40, 10), slo)
    assert not meets_slo(req(250, 250 + 9 * 40, 10), slo)  # TTFT too slow
    assert not meets_slo(req(150, 150 + 9 * 60, 10), slo)  # TPOT too slow
    assert meets_slo(req(200, 200 + 9 * 50, 10), slo)       # exactly at the objectives counts as good


def test_a_failed_request_is_never_good() -> None:
    assert not meets_slo(req(1, 2, 2, success=False), {"ttft": 1e9})


def test_end_to_end_objective() -> None:
    assert meets_slo(req(10, 900, 5), {"e2el": 1000})
    assert not meets_slo(req(10, 1100, 5), {"e2el": 1000})


def test_goodput_counts_good_requests_per_second() -> None:
    requests = [req(100, 500, 5), req(300, 700, 5), req(100, 500, 5, success=False), req(50, 90, 2)]
    assert good_requests(requests, {"ttft": 200}) == 2
    assert goodput(requests, {"ttft": 200}, duration_s=4.0) == pytest.approx(0.5)
    assert goodput(requests, {}, duration_s=2.0) == pytest.approx(1.5)  # no SLO: every success is good


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown SLO keys"):
        meets_slo(req(1, 2, 2), {"ttfb": 10})
    with pytest.raises(ValueError, match="duration_s must be positive"):
        goodput([], {"ttft": 1}, 0.0)
