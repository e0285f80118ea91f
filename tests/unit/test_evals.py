"""Eval sets are checked on load; scorers, intervals and percentiles are exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.evals.evalset import EvalSetError, load_evalset, load_items
from llmops.evals.latency import percentile
from llmops.evals.scorers import exact_match, json_equal
from llmops.evals.scoring import category_scores, score_items
from llmops.evals.stats import bootstrap_mean
from llmops.io.openai_client import Completion

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "evalsets" / "synthetic_chat_v1.yaml"


def _write(tmp_path: Path, rows: list[dict], categories: str = "arithmetic: {}") -> Path:
    data = tmp_path / "set.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = tmp_path / "set.yaml"
    config.write_text(f"name: t\nfile: set.jsonl\ncategories:\n  {categories}\n")
    return config


def _row(i: int = 1, **over) -> dict:
    return {"id": f"a-{i}", "category": "arithmetic", "messages": [{"role": "user", "content": "What is 1+1?"}],
            "reference": "2", "scorer": "exact_match", **over}


def test_shipped_evalset_loads_with_its_categories() -> None:
    evalset = load_evalset(SHIPPED)
    groups = evalset.by_category()
    assert set(groups) == set(evalset.categories) == {"arithmetic", "copy", "reverse", "json"}
    assert all(len(items) == 100 for items in groups.values())
    assert len(evalset.revision) == 16
    assert len(evalset.limited(3).items) == 12


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_row(reference=""), r"set.jsonl:1: field 'reference' is missing or empty"),
        (_row(scorer="bleu"), r"field 'scorer' is 'bleu'; use one of"),
        (_row(category="poetry"), r"field 'category' 'poetry' is not declared"),
        ({k: v for k, v in _row().items() if k != "messages"}, r"needs field 'messages' \(chat\) or 'prompt'"),
        (_row(messages=[{"role": "user"}]), r"field 'messages' must be a non-empty list"),
    ],
)
def test_bad_items_are_refused_with_file_line_and_field(tmp_path: Path, row: dict, message: str) -> None:
    with pytest.raises(EvalSetError, match=message):
        load_evalset(_write(tmp_path, [row]))


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match=r"set.jsonl:2: field 'id' 'a-1' duplicates line 1"):
        load_evalset(_write(tmp_path, [_row(1), _row(1)]))


def test_prompt_form_becomes_a_user_message(tmp_path: Path) -> None:
    row = {k: v for k, v in _row().items() if k != "messages"} | {"prompt": "What is 2+2?"}
    (item,) = load_items(_write(tmp_path, [row]).parent / "set.jsonl")
    assert item.messages == ({"role": "user", "content": "What is 2+2?"},)


def test_scorers() -> None:
    assert exact_match(" 82\n", "82") == 1.0 and exact_match("83", "82") == 0.0
    assert json_equal('{"age": 13, "name": "Gko"}', '{"name": "Gko", "age": 13}') == 1.0
    assert json_equal('{"name": "Gko"', '{"name": "Gko"}') == 0.0
    assert json_equal('{"age": "13"}', '{"age": 13}') == 0.0


def test_transport_errors_score_zero_and_categories_get_intervals(tmp_path: Path) -> None:
    items = load_items(_write(tmp_path, [_row(i) for i in range(10)]).parent / "set.jsonl")
    completions = [Completion("2", 0.1)] * 8 + [Completion("", 0.1, error="URLError"), Completion("3", 0.1)]
    scores = category_scores(score_items(items, completions))
    assert scores["arithmetic"].mean == pytest.approx(0.8)
    assert scores["arithmetic"].ci_low <= 0.8 <= scores["arithmetic"].ci_high
    assert scores["overall"].n == 10


def test_bootstrap_interval_is_seeded_and_narrows_with_more_data() -> None:
    small = [1.0, 0.0] * 10
    large = [1.0, 0.0] * 500
    assert bootstrap_mean(small, seed=3) == bootstrap_mean(small, seed=3)
    width = lambda e: e.ci_high - e.ci_low  # noqa: E731
    assert width(bootstrap_mean(large)) < width(bootstrap_mean(small))
    constant = bootstrap_mean([1.0] * 30)
    assert constant.ci_low == constant.ci_high == 1.0


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)
