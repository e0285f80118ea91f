"""The qualify gate: paired-bootstrap eval gate, formatting check and latency gate, on seeded synthetic scores."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from llmops.core.hardware import SloSpec
from llmops.evals.evalset import CategoryConfig
from llmops.evals.gate import (
    GateInputError,
    GateOptions,
    GateVerdict,
    ItemScore,
    LatencyMeasurement,
    LatencyRound,
    ModelScores,
    check_comparable,
    eval_gate,
    formatting_flags,
    latency_estimate,
    latency_gate,
    qualify,
)
from llmops.evals.scoring import ItemResult

REV = "3f2a9c0d1e4b5a69"
SLO = SloSpec(ttft_p99_ms=500.0, tpot_p99_ms=50.0)
GOOD_LATENCY = LatencyMeasurement("h100x1", ttft_p99_ms=200.0, tpot_p99_ms=20.0)
CONFIG = {"arithmetic": CategoryConfig(min_score=0.5), "json": CategoryConfig(min_score=0.6)}


def model(categories: dict[str, list[float]], *, revision: str = REV, tokenizer: str | None = "tok-1",
          template: str | None = "tpl-1") -> ModelScores:
    """Per-item scores with ids '<category>-<index>' (the same ids for candidate and champion)."""
    items = tuple(ItemScore(f"{cat}-{i:04d}", cat, score) for cat, scores in categories.items()
                  for i, score in enumerate(scores))
    return ModelScores(revision, items, tokenizer_hash=tokenizer, chat_template_hash=template)


def bernoulli(n: int, p: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


def flip_to_zero(scores: list[float], count: int, seed: int) -> list[float]:
    """Lose ``count`` items the model used to get right: a real, paired regression."""
    out = list(scores)
    right = [i for i, s in enumerate(out) if s == 1.0]
    for i in random.Random(seed).sample(right, count):
        out[i] = 0.0
    return out


def gate(candidate: ModelScores, champion: ModelScores | None, config: dict[str, CategoryConfig] | None = None,
         *, candidate_latency: LatencyMeasurement = GOOD_LATENCY,
         champion_latency: LatencyMeasurement | None = GOOD_LATENCY, **options: object) -> GateVerdict:
    return qualify(candidate, champion, CONFIG if config is None else config, candidate_latency,
                   champion_latency if champion is not None else None, SLO, GateOptions(**options))  # type: ignore[arg-type]


def row(verdict: GateVerdict, category: str):
    return next(r for r in verdict.categories if r.category == category)


# --- eval gate vs a champion ------------------------------------------------------------------------------------

def test_identical_scores_pass_with_zero_delta() -> None:
    champ = {"arithmetic": bernoulli(200, 0.8, 1), "json": bernoulli(200, 0.9, 2)}
    verdict = gate(model(champ), model(champ))
    assert verdict.passed
    assert all(r.delta == 0 and r.ci_low == 0 and r.ci_high == 0 for r in verdict.categories)
    assert verdict.reasons[-1].startswith("passed:")


def test_drop_exactly_at_max_drop_passes_and_just_above_fails() -> None:
    # Constant per-item differences make the CI a point, so only the threshold decides.
    # 0.78 - 0.80 is -0.020000000000000018 in floats: the boundary must still pass.
    champ = model({"arithmetic": [0.80] * 50, "json": [1.0] * 50})
    at = gate(model({"arithmetic": [0.78] * 50, "json": [1.0] * 50}), champ)
    assert at.passed, at.reasons
    assert row(at, "arithmetic").delta == pytest.approx(-0.02)
    above = gate(model({"arithmetic": [0.7799] * 50, "json": [1.0] * 50}), champ)
    assert not above.passed
    assert above.failed_categories == ["arithmetic"]


def test_drop_above_threshold_but_inside_ci_passes() -> None:
    # 20 noisy items: 3 lost, 2 gained -> mean drop 0.05 (> 0.02) but the paired CI includes 0.
    champ = [1.0] * 10 + [0.0] * 10
    cand = [0.0, 0.0, 0.0] + [1.0] * 7 + [1.0, 1.0] + [0.0] * 8
    verdict = gate(model({"arithmetic": cand, "json": [1.0] * 20}), model({"arithmetic": champ, "json": [1.0] * 20}))
    r = row(verdict, "arithmetic")
    assert r.delta == pytest.approx(-0.05)
    assert r.ci_low < 0 < r.ci_high
    assert r.passed and verdict.passed
    assert "not significant" in r.reason


def test_drop_outside_ci_and_above_threshold_fails_naming_the_category_and_amount() -> None:
    base = bernoulli(400, 0.8, seed=7)
    cand = flip_to_zero(base, 20, seed=8)  # 20 of 400 items lost: a 0.05 drop, every pair moves the same way
    json_scores = bernoulli(400, 0.9, seed=9)
    verdict = gate(model({"arithmetic": cand, "json": json_scores}),
                   model({"arithmetic": base, "json": json_scores}))
    r = row(verdict, "arithmetic")
    assert not verdict.passed
    assert r.delta == pytest.approx(-0.05)
    assert r.ci_high < 0 and not r.passed
    assert verdict.failed_categories == ["arithmetic"]
    assert any("'arithmetic' dropped by 0.0500" in reason and "max_drop 0.0200" in reason
               for reason in verdict.reasons)
    assert row(verdict, "json").passed


def test_significant_drop_within_a_larger_configured_max_drop_passes() -> None:
    base = bernoulli(400, 0.8, seed=7)
    cand = flip_to_zero(base, 20, seed=8)
    config = {"arithmetic": CategoryConfig(max_drop=0.06)}
    verdict = gate(model({"arithmetic": cand}), model({"arithmetic": base}), config)
    r = row(verdict, "arithmetic")
    assert r.ci_high < 0  # significant, yet allowed by this category's threshold
    assert r.passed and r.threshold == 0.06 and r.rule == "max_drop"


def test_improvement_passes_with_positive_delta() -> None:
    base = bernoulli(300, 0.6, seed=3)
    better = [1.0 if s == 0.0 and i % 2 == 0 else s for i, s in enumerate(base)]
    verdict = gate(model({"arithmetic": better, "json": [1.0] * 10}), model({"arithmetic": base, "json": [1.0] * 10}))
    r = row(verdict, "arithmetic")
    assert verdict.passed
    assert r.delta > 0 and r.ci_low > 0
    assert "no drop" in r.reason


def test_every_failing_category_is_named() -> None:
    base = {"arithmetic": [1.0] * 100, "json": [1.0] * 100}
    cand = {"arithmetic": [0.0] * 10 + [1.0] * 90, "json": [0.0] * 30 + [1.0] * 70}
    verdict = gate(model(cand), model(base))
    assert verdict.failed_categories == ["arithmetic", "json"]
    text = " ".join(verdict.reasons)
    assert "'arithmetic' dropped by 0.1000" in text and "'json' dropped by 0.3000" in text


def test_bootstrap_is_seeded_and_independent_of_item_order() -> None:
    base = bernoulli(150, 0.7, seed=11)
    cand = flip_to_zero(base, 10, seed=12)
    champ, candidate = model({"arithmetic": base}), model({"arithmetic": cand})
    shuffled = dataclasses.replace(candidate, items=tuple(random.Random(5).sample(candidate.items,
                                                                                   len(candidate.items))))
    config = {"arithmetic": CategoryConfig()}
    first = eval_gate(candidate, champ, config, GateOptions(seed=1))
    assert first == eval_gate(shuffled, champ, config, GateOptions(seed=1))
    other_seed = eval_gate(candidate, champ, config, GateOptions(seed=2))
    assert other_seed[0].delta == first[0].delta


def test_wider_confidence_gives_a_wider_interval() -> None:
    base = bernoulli(100, 0.7, seed=21)
    cand = flip_to_zero(base, 5, seed=22)
    config = {"arithmetic": CategoryConfig()}
    narrow = eval_gate(model({"arithmetic": cand}), model({"arithmetic": base}), config, GateOptions(confidence=0.8))
    wide = eval_gate(model({"arithmetic": cand}), model({"arithmetic": base}), config, GateOptions(confidence=0.99))
    assert wide[0].ci_low <= narrow[0].ci_low and wide[0].ci_high >= narrow[0].ci_high


def test_item_results_from_the_eval_job_are_accepted() -> None:
    def result(item_id: str, category: str, score: float) -> ItemResult:
        return ItemResult(id=item_id, category=category, reference="r", prediction="p", score=score,
                          latency_s=0.1, error=None)

    cand = ModelScores.from_items(REV, [result("a", "json", 1.0), result("b", "json", 0.0)], tokenizer_hash="t")
    assert cand.by_category() == {"json": {"a": 1.0, "b": 0.0}}
    assert cand.tokenizer_hash == "t" and cand.chat_template_hash is None


# --- refused inputs -----------------------------------------------------------------------------------------------

def test_mismatched_revisions_are_refused() -> None:
    with pytest.raises(GateInputError, match="revision mismatch.*'rev-a'.*'rev-b'"):
        gate(model({"json": [1.0]}, revision="rev-a"), model({"json": [1.0]}, revision="rev-b"))


def test_mismatched_item_sets_are_refused_naming_the_items() -> None:
    champ = model({"json": [1.0, 1.0, 1.0]})
    cand = model({"json": [1.0, 1.0]})
    with pytest.raises(GateInputError, match=r"item set mismatch.*0 item\(s\) only in the candidate.*json-0002"):
        check_comparable(cand, champ)
    with pytest.raises(GateInputError, match="item set mismatch"):
        gate(cand, champ)


def test_item_moved_to_another_category_is_refused() -> None:
    champ = ModelScores(REV, (ItemScore("x", "json", 1.0),))
    cand = ModelScores(REV, (ItemScore("x", "arithmetic", 1.0),))
    with pytest.raises(GateInputError, match="category mismatch.*x"):
        check_comparable(cand, champ)


@pytest.mark.parametrize(("items", "match"), [
    ((ItemScore("a", "json", 1.0), ItemScore("a", "json", 0.0)), "'a' appears twice"),
    ((ItemScore("a", "json", float("nan")),), "finite"),
    ((ItemScore("a", "", 1.0),), "empty category"),
])
def test_bad_scores_are_refused(items: tuple[ItemScore, ...], match: str) -> None:
    with pytest.raises(GateInputError, match=match):
        ModelScores(REV, items)


def test_empty_revision_is_refused() -> None:
    with pytest.raises(GateInputError, match="revision"):
        ModelScores("", ())


@pytest.mark.parametrize(("options", "match"), [
    ({"confidence": 1.0}, "confidence"), ({"resamples": 0}, "resamples"),
    ({"latency_tolerance": -0.1}, "latency_tolerance"), ({"formatting_category": ""}, "formatting_category"),
])
def test_bad_options_are_refused(options: dict[str, object], match: str) -> None:
    with pytest.raises(GateInputError, match=match):
        GateOptions(**options)  # type: ignore[arg-type]


# --- missing and unconfigured categories ----------------------------------------------------------------------

@pytest.mark.parametrize("with_champion", [True, False])
def test_category_in_config_without_scores_fails(with_champion: bool) -> None:
    scores = {"arithmetic": [1.0] * 10, "json": [1.0] * 10}
    config = {**CONFIG, "reasoning": CategoryConfig(min_score=0.3)}
    verdict = gate(model(scores), model(scores) if with_champion else None, config)
    r = row(verdict, "reasoning")
    assert not verdict.passed and not r.passed and r.n == 0 and r.candidate_mean is None
    assert "category 'reasoning' is in the gate config but has no scored items" in verdict.reasons


def test_scored_category_missing_from_config_is_gated_with_defaults() -> None:
    champ = model({"json": [1.0] * 50, "extra": [1.0] * 50})
    cand = model({"json": [1.0] * 50, "extra": [0.0] * 10 + [1.0] * 40})
    verdict = gate(cand, champ, {"json": CategoryConfig()})
    r = row(verdict, "extra")
    assert not r.passed and r.threshold == CategoryConfig().max_drop
    assert "default thresholds" in r.reason


# --- first model ever: absolute minimums --------------------------------------------------------------------------

def test_first_model_uses_absolute_minimums() -> None:
    verdict = gate(model({"arithmetic": [1.0] * 6 + [0.0] * 4, "json": [1.0] * 10}), None)
    assert verdict.passed and not verdict.has_champion
    r = row(verdict, "arithmetic")
    assert r.rule == "min_score" and r.threshold == 0.5 and r.champion_mean is None and r.delta is None
    assert r.ci_low <= r.candidate_mean <= r.ci_high


def test_first_model_exactly_at_min_score_passes_and_below_fails_by_how_much() -> None:
    at = gate(model({"arithmetic": [0.5] * 10, "json": [0.6] * 10}), None)
    assert at.passed, at.reasons
    below = gate(model({"arithmetic": [1.0] * 4 + [0.0] * 6, "json": [0.6] * 10}), None)
    assert below.failed_categories == ["arithmetic"]
    assert any("'arithmetic' scored 0.4000" in r and "below min_score 0.5000 by 0.1000" in r
               for r in below.reasons)


def test_first_model_is_never_flagged_for_formatting() -> None:
    verdict = gate(model({"arithmetic": [1.0], "json": [1.0]}, tokenizer=None, template=None), None)
    assert (verdict.tokenizer_changed, verdict.chat_template_changed) == (False, False)


# --- tokenizer / chat-template change --------------------------------------------------------------------------

def test_tokenizer_change_is_flagged_and_passes_when_formatting_category_passes() -> None:
    scores = {"arithmetic": [1.0] * 20, "json": [1.0] * 20}
    verdict = gate(model(scores, tokenizer="tok-2"), model(scores))
    assert verdict.passed
    assert verdict.tokenizer_changed and not verdict.chat_template_changed
    assert any("tokenizer changed vs the champion" in r and "'json' passed" in r for r in verdict.reasons)


def test_chat_template_change_requires_the_formatting_category_to_pass() -> None:
    champ = {"arithmetic": [1.0] * 100, "json": [1.0] * 100}
    cand = {"arithmetic": [1.0] * 100, "json": [0.0] * 10 + [1.0] * 90}
    verdict = gate(model(cand, template="tpl-2"), model(champ))
    assert not verdict.passed and verdict.chat_template_changed
    assert any("chat template changed" in r and "'json' must pass and failed" in r for r in verdict.reasons)


def test_tokenizer_change_fails_when_formatting_category_is_absent() -> None:
    scores = {"arithmetic": [1.0] * 20}
    config = {"arithmetic": CategoryConfig()}
    unchanged = gate(model(scores), model(scores), config)
    assert unchanged.passed  # no formatting category needed when nothing changed
    changed = gate(model(scores, tokenizer="tok-2"), model(scores), config)
    assert not changed.passed
    assert all(r.passed for r in changed.categories)
    assert any("'json' must be scored and pass, but it has no scored items" in r for r in changed.reasons)


def test_formatting_category_name_is_configurable() -> None:
    scores = {"arithmetic": [1.0] * 20, "structured": [1.0] * 20}
    config = {"arithmetic": CategoryConfig(), "structured": CategoryConfig()}
    assert not gate(model(scores, tokenizer="tok-2"), model(scores), config).passed
    verdict = gate(model(scores, tokenizer="tok-2"), model(scores), config, formatting_category="structured")
    assert verdict.passed and verdict.formatting_category == "structured"


def test_unknown_hash_counts_as_changed() -> None:
    scores = {"json": [1.0]}
    assert formatting_flags(model(scores, tokenizer=None), model(scores)) == (True, False)
    assert formatting_flags(model(scores), model(scores, template=None)) == (False, True)
    assert formatting_flags(model(scores), model(scores)) == (False, False)
    assert formatting_flags(model(scores), None) == (False, False)


# --- latency gate -----------------------------------------------------------------------------------------------

def test_latency_within_slo_and_tolerance_passes() -> None:
    rows = latency_gate(LatencyMeasurement("h100x1", 210.0, 21.0), GOOD_LATENCY, SLO)
    assert [r.metric for r in rows] == ["ttft_p99_ms", "tpot_p99_ms"]
    assert all(r.passed for r in rows)
    assert rows[0].ratio == pytest.approx(1.05) and rows[0].max_ratio == pytest.approx(1.1)


def test_latency_slo_breach_fails_even_when_the_champion_is_as_slow() -> None:
    slow = LatencyMeasurement("h100x1", ttft_p99_ms=600.0, tpot_p99_ms=20.0)
    rows = latency_gate(slow, slow, SLO)
    assert not rows[0].passed and rows[1].passed
    assert "breaks the SLO 500.0 ms by 100.0 ms" in rows[0].reason


def test_latency_exactly_at_slo_passes() -> None:
    rows = latency_gate(LatencyMeasurement("h100x1", 500.0, 50.0), None, SLO)
    assert all(r.passed for r in rows)


def test_relative_latency_regression_fails_and_boundary_passes() -> None:
    at_limit = latency_gate(LatencyMeasurement("h100x1", 220.0, 22.0), GOOD_LATENCY, SLO)
    assert all(r.passed for r in at_limit)  # exactly 10% worse is allowed
    worse = latency_gate(LatencyMeasurement("h100x1", 200.0, 22.2), GOOD_LATENCY, SLO)
    assert worse[0].passed and not worse[1].passed
    assert ("tpot_p99_ms 22.2 ms (single measurement) is 11.0% worse than the champion's 20.0 ms (limit 10%)"
            in worse[1].reason)


def test_latency_tolerance_is_configurable() -> None:
    rows = latency_gate(LatencyMeasurement("h100x1", 240.0, 20.0), GOOD_LATENCY, SLO, tolerance=0.25)
    assert all(r.passed for r in rows)


def test_latency_without_champion_checks_the_slo_only() -> None:
    rows = latency_gate(LatencyMeasurement("h100x1", 450.0, 45.0), None, SLO)
    assert all(r.passed and r.ratio is None for r in rows)
    assert "no champion measurement" in rows[0].reason


def test_latency_on_another_hardware_class_is_refused() -> None:
    with pytest.raises(GateInputError, match="hardware class mismatch"):
        latency_gate(GOOD_LATENCY, LatencyMeasurement("h200x1", 100.0, 10.0), SLO)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf")])
def test_bad_latency_is_refused(value: float) -> None:
    with pytest.raises(GateInputError, match="ttft_p99_ms"):
        LatencyMeasurement("h100x1", value, 10.0)


def test_latency_failure_fails_the_verdict_with_good_scores() -> None:
    scores = {"arithmetic": [1.0] * 10, "json": [1.0] * 10}
    verdict = gate(model(scores), model(scores),
                   candidate_latency=LatencyMeasurement("h100x1", ttft_p99_ms=230.0, tpot_p99_ms=20.0))
    assert not verdict.passed and verdict.failed_categories == []
    assert verdict.reasons == (verdict.latency[0].reason,)
    assert "ttft_p99_ms" in verdict.reasons[0]


def test_champion_never_benchmarked_on_this_class_uses_slo_only() -> None:
    scores = {"arithmetic": [1.0] * 10, "json": [1.0] * 10}
    verdict = qualify(model(scores), model(scores), CONFIG, LatencyMeasurement("h100x1", 450.0, 45.0), None, SLO)
    assert verdict.passed and verdict.has_champion
    assert all(r.champion_ms is None for r in verdict.latency)


# --- the verdict as data --------------------------------------------------------------------------------------------

def test_verdict_is_frozen_and_json_able() -> None:
    base = bernoulli(100, 0.8, seed=31)
    verdict = gate(model({"arithmetic": flip_to_zero(base, 10, seed=32), "json": [1.0] * 100}, tokenizer="tok-2"),
                   model({"arithmetic": base, "json": [1.0] * 100}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.passed = True  # type: ignore[misc]
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["tokenizer_changed"] is True
    assert data["failed_categories"] == ["arithmetic"]
    assert data["eval_set_revision"] == REV and data["hardware_class"] == "h100x1"
    assert {c["category"] for c in data["categories"]} == {"arithmetic", "json"}
    assert set(data["categories"][0]) == {"category", "n", "candidate_mean", "champion_mean", "delta", "ci_low",
                                          "ci_high", "threshold", "rule", "passed", "reason"}
    assert [r["metric"] for r in data["latency"]] == ["ttft_p99_ms", "tpot_p99_ms"]
    assert data["reasons"] == list(verdict.reasons)


def test_first_model_verdict_is_json_able_with_empty_fields() -> None:
    verdict = gate(model({"arithmetic": [1.0], "json": [1.0]}), None, {**CONFIG, "missing": CategoryConfig()})
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data["has_champion"] is False
    assert next(c for c in data["categories"] if c["category"] == "missing")["candidate_mean"] is None


def test_markdown_has_a_row_per_category_and_metric_and_the_reasons() -> None:
    base = {"arithmetic": [1.0] * 100, "json": [1.0] * 100}
    verdict = gate(model({"arithmetic": [0.0] * 10 + [1.0] * 90, "json": [1.0] * 100}), model(base))
    text = verdict.to_markdown()
    assert text.startswith("## Qualify gate: FAILED")
    assert "| category | n | candidate | champion | delta | 95% CI | rule | result |" in text
    assert "| arithmetic | 100 | 0.9000 | 1.0000 | -0.1000 |" in text and "**FAIL**" in text
    assert "| json | 100 | 1.0000 | 1.0000 | +0.0000 |" in text
    assert "| ttft_p99_ms | 200.0 | 200.0 | 500.0 | 1.0000 |" in text
    assert "- category 'arithmetic' dropped by 0.1000" in text


def test_markdown_of_a_first_model() -> None:
    text = gate(model({"arithmetic": [1.0], "json": [1.0]}), None).to_markdown()
    assert text.startswith("## Qualify gate: PASSED")
    assert "first model: absolute minimums" in text and "| >= 0.500 |" in text


# --- latency on a shared-CPU class: the median of the rounds ----------------------------------------------------

SHARED = SloSpec(ttft_p99_ms=1000.0, tpot_p99_ms=100.0, max_regression=None, shared_cpu=True, latency_rounds=5)
SHARED_SCORES = {"arithmetic": [1.0] * 10, "json": [1.0] * 10}


def rounds(tpot: list[float], ttft: list[float] | None = None, hardware_class: str = "cpu") -> LatencyMeasurement:
    ttft = ttft or [200.0] * len(tpot)
    return LatencyMeasurement.from_rounds(hardware_class, [LatencyRound(a, b) for a, b in zip(ttft, tpot, strict=True)])


def test_estimate_names_how_the_class_is_judged() -> None:
    assert latency_estimate(SLO) == "single measurement"
    assert latency_estimate(SHARED) == "median of 5 rounds on a shared-CPU class"
    # A pure caller's SLO with rounds on a dedicated class (the hardware schema refuses it) still says so.
    assert latency_estimate(SloSpec(ttft_p99_ms=1.0, tpot_p99_ms=1.0, latency_rounds=3)) == "median of 3 rounds"


def test_from_rounds_takes_each_metrics_median() -> None:
    m = rounds([62.0, 109.6, 58.3, 71.2, 66.0], ttft=[40.0, 300.0, 35.0, 50.0, 45.0])
    assert (m.ttft_p99_ms, m.tpot_p99_ms) == (45.0, 66.0)  # medians per metric, not one round's pair
    assert m.round_count == 5
    assert m.round_values("tpot_p99_ms") == (62.0, 109.6, 58.3, 71.2, 66.0)


def test_from_rounds_of_an_even_count_averages_the_middle_two() -> None:
    assert rounds([10.0, 40.0, 20.0, 30.0]).tpot_p99_ms == 25.0


def test_from_rounds_accepts_the_eval_jobs_round_dicts() -> None:
    job_rounds = [{"requests": 32.0, "errors": 0.0, "ttft_p50_ms": 20.0, "ttft_p99_ms": 90.0 + i,
                   "tpot_p50_ms": 5.0, "tpot_p99_ms": 30.0 + i} for i in range(3)]
    m = LatencyMeasurement.from_rounds("cpu", job_rounds)
    assert (m.ttft_p99_ms, m.tpot_p99_ms) == (91.0, 31.0)
    assert m.rounds[0] == LatencyRound(90.0, 30.0)


def test_median_does_not_depend_on_round_order() -> None:
    values = [62.0, 109.6, 58.3, 71.2, 66.0]
    orders = (values, list(reversed(values)), sorted(values))
    assert {rounds(order).tpot_p99_ms for order in orders} == {66.0}


def test_a_single_measurement_has_no_rounds() -> None:
    assert GOOD_LATENCY.rounds == () and GOOD_LATENCY.round_count == 1
    assert GOOD_LATENCY.round_values("ttft_p99_ms") == ()


@pytest.mark.parametrize(("job_rounds", "match"), [
    ([], "no rounds"),
    ([{"ttft_p99_ms": 1.0}], r"rounds\[0\]: no tpot_p99_ms"),
    ([{"ttft_p99_ms": 1.0, "tpot_p99_ms": 1.0}, {"tpot_p99_ms": 1.0}], r"rounds\[1\]: no ttft_p99_ms"),
    ([{"ttft_p99_ms": 1.0, "tpot_p99_ms": 0.0}], r"LatencyRound\.tpot_p99_ms: 0\.0 is not a positive"),
    ([{"ttft_p99_ms": float("nan"), "tpot_p99_ms": 1.0}], r"LatencyRound\.ttft_p99_ms: nan"),
    ([{"ttft_p99_ms": True, "tpot_p99_ms": 1.0}], r"LatencyRound\.ttft_p99_ms: True"),
])
def test_bad_rounds_are_refused(job_rounds: list[dict], match: str) -> None:
    with pytest.raises(GateInputError, match=match):
        LatencyMeasurement.from_rounds("cpu", job_rounds)


def test_a_measurement_whose_values_are_not_its_rounds_median_is_refused() -> None:
    measured = (LatencyRound(100.0, 10.0), LatencyRound(200.0, 20.0), LatencyRound(300.0, 30.0))
    with pytest.raises(GateInputError, match=r"ttft_p99_ms: 300\.0 is not the median 200\.0 of its 3 rounds"):
        LatencyMeasurement("cpu", ttft_p99_ms=300.0, tpot_p99_ms=20.0, rounds=measured)
    with pytest.raises(GateInputError, match=r"rounds\[0\].*not a LatencyRound"):
        LatencyMeasurement("cpu", 1.0, 1.0, rounds=({"ttft_p99_ms": 1.0, "tpot_p99_ms": 1.0},))  # type: ignore[arg-type]
    assert LatencyMeasurement("cpu", 200.0, 20.0, rounds=list(measured)).rounds == measured  # type: ignore[arg-type]


def test_one_slow_round_does_not_decide_a_shared_cpu_verdict() -> None:
    # The reported failure: one TPOT p99 of 109.6 ms among rounds well inside the 100 ms SLO.
    rows = latency_gate(rounds([62.0, 109.6, 58.3, 71.2, 66.0]), None, SHARED)
    assert all(r.passed for r in rows)
    tpot = rows[1]
    assert tpot.candidate_ms == 66.0 and tpot.estimate == "median of 5 rounds on a shared-CPU class"
    assert tpot.candidate_rounds_ms == (62.0, 109.6, 58.3, 71.2, 66.0) and tpot.champion_rounds_ms == ()
    assert tpot.reason == ("latency tpot_p99_ms 66.0 ms (median of 5 rounds on a shared-CPU class: 62.0, 109.6, "
                           "58.3, 71.2, 66.0 ms; 1 of 5 above the SLO) within the SLO 100.0 ms "
                           "(no champion measurement)")


@pytest.mark.parametrize("outlier", [100.1, 250.0, 1e6])
def test_two_outliers_of_any_size_cannot_fail_five_rounds(outlier: float) -> None:
    rows = latency_gate(rounds([outlier, 90.0, outlier, 95.0, 99.0]), None, SHARED)
    assert rows[1].passed and rows[1].candidate_ms == 99.0  # 90, 95, [99], outlier, outlier


def test_a_majority_of_slow_rounds_fails_naming_the_rounds() -> None:
    rows = latency_gate(rounds([101.0, 90.0, 130.0, 120.0, 95.0]), None, SHARED)
    assert rows[0].passed and not rows[1].passed
    assert rows[1].reason == ("latency tpot_p99_ms 101.0 ms (median of 5 rounds on a shared-CPU class: 101.0, 90.0, "
                              "130.0, 120.0, 95.0 ms; 3 of 5 above the SLO) breaks the SLO 100.0 ms by 1.0 ms")


def test_a_median_exactly_at_the_slo_passes() -> None:
    assert latency_gate(rounds([100.0, 100.0, 100.0, 150.0, 50.0]), None, SHARED)[1].passed


def test_rounds_also_judge_ttft() -> None:
    rows = latency_gate(rounds([10.0] * 5, ttft=[900.0, 1200.0, 1100.0, 1300.0, 100.0]), None, SHARED)
    assert not rows[0].passed and rows[0].candidate_ms == 1100.0 and rows[1].passed


def test_relative_check_compares_medians_when_the_class_has_one() -> None:
    slo = SloSpec(ttft_p99_ms=1000.0, tpot_p99_ms=100.0, max_regression=0.10, shared_cpu=True, latency_rounds=3)
    champion = rounds([50.0, 52.0, 90.0])  # median 52
    within = latency_gate(rounds([57.0, 57.2, 20.0]), champion, slo, tolerance=0.10)  # median 57.0 = 1.096x
    assert within[1].passed and within[1].ratio == pytest.approx(57.0 / 52.0)
    assert within[1].champion_ms == 52.0 and within[1].champion_rounds_ms == (50.0, 52.0, 90.0)
    worse = latency_gate(rounds([58.0, 58.0, 20.0]), champion, slo, tolerance=0.10)  # 1.115x
    assert not worse[1].passed
    assert "(median of 3 rounds on a shared-CPU class: 58.0, 58.0, 20.0 ms; 0 of 3 above the SLO) is 11.5% worse " \
           "than the champion's 52.0 ms" in worse[1].reason


@pytest.mark.parametrize(("candidate", "champion", "role", "count"), [
    (LatencyMeasurement("cpu", 200.0, 60.0), None, "candidate", 1),
    (None, LatencyMeasurement("cpu", 200.0, 60.0), "champion", 1),
    (None, "three", "champion", 3),
])
def test_rounds_must_match_the_class(candidate: LatencyMeasurement | None, champion: object, role: str,
                                     count: int) -> None:
    five = rounds([60.0] * 5)
    if champion == "three":
        champion = rounds([60.0] * 3)
    with pytest.raises(GateInputError, match=rf"{role} latency on 'cpu' was measured in {count} round\(s\), but the "
                                             r"class declares slo.latency_rounds 5 \(median of 5 rounds on a shared-"
                                             r"CPU class\); measure it in 5 round\(s\) \(the eval job's "
                                             r"--latency-rounds\)"):
        latency_gate(candidate or five, champion, SHARED)  # type: ignore[arg-type]


def test_a_gpu_class_refuses_rounds() -> None:
    with pytest.raises(GateInputError, match=r"candidate latency on 'h100x1' was measured in 3 round\(s\), but the "
                                             r"class declares slo.latency_rounds 1 \(single measurement\)"):
        latency_gate(rounds([20.0] * 3, hardware_class="h100x1"), None, SLO)


def test_a_gpu_class_is_judged_on_its_single_measurement_as_before() -> None:
    rows = latency_gate(LatencyMeasurement("h100x1", 210.0, 21.0), GOOD_LATENCY, SLO)
    assert [r.estimate for r in rows] == ["single measurement"] * 2
    assert [(r.candidate_ms, r.champion_ms, r.passed) for r in rows] == [(210.0, 200.0, True), (21.0, 20.0, True)]
    assert all(r.candidate_rounds_ms == () == r.champion_rounds_ms for r in rows)
    assert rows[0].reason == "latency ttft_p99_ms 210.0 ms (single measurement) within the SLO and 1.050x the champion"


def test_shared_cpu_verdict_says_how_latency_was_judged() -> None:
    verdict = qualify(model(SHARED_SCORES), None, CONFIG, rounds([62.0, 109.6, 58.3, 71.2, 66.0]), None, SHARED)
    assert verdict.passed and verdict.latency_estimate == "median of 5 rounds on a shared-CPU class"
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data["latency_estimate"] == "median of 5 rounds on a shared-CPU class"
    assert data["latency"][1]["estimate"] == "median of 5 rounds on a shared-CPU class"
    assert data["latency"][1]["candidate_ms"] == 66.0
    assert data["latency"][1]["candidate_rounds_ms"] == [62.0, 109.6, 58.3, 71.2, 66.0]
    assert data["latency"][1]["champion_rounds_ms"] == []
    text = verdict.to_markdown()
    assert "Latency: median of 5 rounds on a shared-CPU class (each round's p99 in the last column" in text
    assert "| latency | candidate ms | champion ms | SLO ms | ratio | max ratio | result | rounds ms |" in text
    assert "| tpot_p99_ms | 66.0 | - | 100.0 | - | 1.100 | pass | 62.0, 109.6, 58.3, 71.2, 66.0 / - |" in text


def test_shared_cpu_failure_reason_reaches_the_verdict() -> None:
    verdict = qualify(model(SHARED_SCORES), None, CONFIG, rounds([101.0, 90.0, 130.0, 120.0, 95.0]), None, SHARED)
    assert not verdict.passed and verdict.failed_categories == []
    assert verdict.reasons == (verdict.latency[1].reason,)
    assert "median of 5 rounds on a shared-CPU class" in verdict.reasons[0]


def test_single_measurement_verdict_says_so() -> None:
    verdict = gate(model(SHARED_SCORES), model(SHARED_SCORES))
    assert verdict.latency_estimate == "single measurement"
    assert verdict.to_dict()["latency_estimate"] == "single measurement"
    text = verdict.to_markdown()
    assert "Latency: single measurement.\n" in text and "rounds ms" not in text
    assert "| ttft_p99_ms | 200.0 | 200.0 | 500.0 | 1.0000 | 1.100 | pass |\n" in text


# --- the eval job's rounds, as the gate takes them ---------------------------------------------------------------

def _fake_measure(tpot_by_round: list[float]):
    """A stand-in for measure_latency: round i reports tpot_by_round[i] (and records its calls)."""
    calls: list[dict] = []

    def measure(base_url: str, model: str, prompts: list, *, concurrency: int, max_tokens: int) -> dict[str, float]:
        i = len(calls)
        calls.append({"base_url": base_url, "model": model, "n": len(prompts), "concurrency": concurrency,
                      "max_tokens": max_tokens})
        return {"requests": float(len(prompts)), "errors": float(i % 2), "ttft_p50_ms": 10.0 + i,
                "ttft_p99_ms": 40.0 + i, "tpot_p50_ms": 5.0, "tpot_p99_ms": tpot_by_round[i]}

    return measure, calls


def test_one_latency_round_is_the_single_measurement_unchanged() -> None:
    from llmops.evals.latency import measure_latency_rounds

    measure, calls = _fake_measure([22.0])
    pauses: list[float] = []
    result = measure_latency_rounds("http://x/v1", "m", [[]] * 32, rounds=1, measure=measure, sleep=pauses.append)
    assert result == {"requests": 32.0, "errors": 0.0, "ttft_p50_ms": 10.0, "ttft_p99_ms": 40.0,
                      "tpot_p50_ms": 5.0, "tpot_p99_ms": 22.0}
    assert len(calls) == 1 and pauses == []


def test_latency_rounds_report_each_round_and_their_medians() -> None:
    from llmops.evals.latency import measure_latency_rounds

    tpot = [62.0, 109.6, 58.3, 71.2, 66.0]
    measure, calls = _fake_measure(tpot)
    pauses: list[float] = []
    result = measure_latency_rounds("http://x/v1", "m", [[]] * 32, rounds=5, concurrency=3, max_tokens=16,
                                    pause_s=0.5, measure=measure, sleep=pauses.append)
    assert len(calls) == 5 and {c["concurrency"] for c in calls} == {3} and {c["max_tokens"] for c in calls} == {16}
    assert pauses == [0.5] * 4  # between rounds, not before the first or after the last
    assert [r["tpot_p99_ms"] for r in result["rounds"]] == tpot
    assert result["requests"] == 160.0 and result["errors"] == 2.0 and result["latency_rounds"] == 5.0
    assert result["tpot_p99_ms"] == 66.0 and result["ttft_p99_ms"] == 42.0
    # What the gate makes of it: the same medians, every round kept.
    measured = LatencyMeasurement.from_rounds("cpu", result["rounds"])
    assert (measured.ttft_p99_ms, measured.tpot_p99_ms, measured.round_count) == (42.0, 66.0, 5)
    assert json.loads(json.dumps(result)) == result  # the job's return.json carries it as is


def test_latency_rounds_refuse_zero() -> None:
    from llmops.evals.latency import measure_latency_rounds

    with pytest.raises(ValueError, match="rounds must be >= 1"):
        measure_latency_rounds("http://x/v1", "m", [], rounds=0)


@pytest.mark.parametrize(("requested", "hardware_class", "expected"), [
    (None, "cpu", 5),        # the pod job's class decides: the embedded class is judged on 5 rounds
    (None, "h100x1", 1),     # a GPU class: a single measurement, as before
    (None, None, 1),         # no class known (a job run by hand): a single measurement
    (3, "cpu", 3),           # an explicit --latency-rounds wins (the gate then names the mismatch)
])
def test_the_eval_job_measures_the_rounds_its_class_declares(requested: int | None, hardware_class: str | None,
                                                              expected: int) -> None:
    from llmops.jobs.evaluate import latency_rounds, parse_args

    assert latency_rounds(requested, hardware_class) == expected
    assert parse_args(["--evalset", "x.yaml", "--model", "m"]).latency_rounds is None
    assert parse_args(["--evalset", "x.yaml", "--model", "m", "--latency-rounds", "5"]).latency_rounds == 5
    with pytest.raises(SystemExit):
        parse_args(["--evalset", "x.yaml", "--model", "m", "--latency-rounds", "0"])
