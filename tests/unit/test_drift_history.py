"""Reading the eval job's metric names and per-item rows back into drift records (pure helpers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmops.drift.history import items_from_rows, scores_from_metrics, weekly_eval_from_run
from llmops.drift.series import CategoryScore, SeriesError
from llmops.evals.stats import ScoreEstimate
from llmops.io.tracking import eval_metrics


def test_scores_round_trip_the_eval_jobs_metric_names() -> None:
    logged = eval_metrics({"reverse": ScoreEstimate(0.5, 0.4, 0.6, 40), "overall": ScoreEstimate(0.8, 0.7, 0.9, 160)})
    logged.update({"eval/errors": 0.0, "latency/ttft_p99_ms": 12.0})
    assert scores_from_metrics(logged) == {"reverse": CategoryScore(0.5, 0.4, 0.6, 40),
                                           "overall": CategoryScore(0.8, 0.7, 0.9, 160)}


def test_items_join_prompts_by_id() -> None:
    rows = [{"id": "a", "category": "c", "reference": "x", "prediction": "y", "score": 0.0, "latency_s": 0.1,
             "error": None}, {"id": "b", "category": "c", "reference": "x", "prediction": None, "score": 1,
                              "latency_s": 0.1, "error": "timeout"}]
    items = items_from_rows(rows, {"a": "question a"})
    assert [(i.id, i.prompt, i.prediction, i.score, i.error) for i in items] == [
        ("a", "question a", "y", 0.0, None), ("b", "", "", 1.0, "timeout")]


def _run(tags: dict, start_ms: int = 1_764_000_000_000) -> SimpleNamespace:
    metrics = eval_metrics({"c": ScoreEstimate(1.0, 1.0, 1.0, 3)})
    return SimpleNamespace(info=SimpleNamespace(run_id="r1", start_time=start_ms),
                           data=SimpleNamespace(tags=tags, metrics=metrics))


def test_weekly_eval_from_run_reads_the_tags() -> None:
    tags = {"week": "2026-W47", "model": "m", "alias": "champion", "model_version": "2", "evalset": "s",
            "evalset_revision": "abc"}
    record = weekly_eval_from_run(_run(tags))
    assert (record.week, record.alias, record.version, record.evalset_revision) == ("2026-W47", "champion", "2", "abc")
    assert record.started_at == 1_764_000_000.0
    baseline = weekly_eval_from_run(_run({k: v for k, v in tags.items() if k not in ("week", "alias")}),
                                    alias="qualify")
    assert baseline.alias == "qualify" and baseline.week == "2025-W48"  # from the run's start time
    with pytest.raises(SeriesError, match="evalset_revision"):
        weekly_eval_from_run(_run({**tags, "evalset_revision": ""}))
