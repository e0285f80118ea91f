"""Pure tests of the synthetic chat tasks and the committed eval set (no torch needed)."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from llmops.modelmaker import tasks

ROOT = Path(__file__).resolve().parents[2]
EVALSET = ROOT / "include" / "evalsets" / "synthetic_chat_v1.jsonl"
EVALSET_YAML = ROOT / "include" / "evalsets" / "synthetic_chat_v1.yaml"


@pytest.mark.parametrize("category", tasks.CATEGORIES)
def test_generators_are_deterministic(category: str) -> None:
    gen = tasks.GENERATORS[category]
    first = [gen(random.Random(42)) for _ in range(3)]
    again = [gen(random.Random(42)) for _ in range(3)]
    assert first == again
    rng_a, rng_b = random.Random(1), random.Random(2)
    assert [gen(rng_a) for _ in range(20)] != [gen(rng_b) for _ in range(20)]


def test_training_stream_is_deterministic() -> None:
    a = list(itertools.islice(tasks.training_stream(5), 200))
    b = list(itertools.islice(tasks.training_stream(5), 200))
    assert a == b
    assert {ex.category for ex in a} == set(tasks.CATEGORIES)


def test_arithmetic_answers() -> None:
    rng = random.Random(3)
    for _ in range(200):
        ex = tasks.make_arithmetic(rng)
        a, b = re.fullmatch(r"What is (\d+)\+(\d+)\?", ex.prompt).groups()  # type: ignore[union-attr]
        assert ex.answer == str(int(a) + int(b))


def test_reverse_and_copy_answers() -> None:
    rng = random.Random(4)
    for _ in range(200):
        rev = tasks.make_reverse(rng)
        word = rev.prompt.removeprefix("Reverse: ")
        assert word.isalpha() and word.islower() and 3 <= len(word) <= 7
        assert rev.answer == word[::-1]
        cp = tasks.make_copy(rng)
        assert cp.answer == cp.prompt.removeprefix("Repeat: ")


def test_json_answers_parse_to_the_prompt_fields() -> None:
    rng = random.Random(5)
    for _ in range(200):
        ex = tasks.make_json(rng)
        name, age = re.fullmatch(r"name=(\w+) age=(\d+) as JSON", ex.prompt).groups()  # type: ignore[union-attr]
        assert json.loads(ex.answer) == {"name": name, "age": int(age)}
        assert ex.answer == f'{{"name": "{name}", "age": {age}}}'


def test_example_from_the_brief() -> None:
    assert tasks.json_answer("Gko", 13) == '{"name": "Gko", "age": 13}'


def test_corrupt_only_touches_its_category() -> None:
    rev = tasks.Example("reverse", "Reverse: abcde", "edcba")
    assert tasks.corrupt(rev, "reverse").answer == "abcde"
    cp = tasks.Example("copy", "Repeat: kqzv", "kqzv")
    assert tasks.corrupt(cp, "reverse") == cp
    stream = itertools.islice(tasks.training_stream(9, corrupt_category="reverse"), 400)
    for ex in stream:
        if ex.category == "reverse":
            assert ex.answer == ex.prompt.removeprefix("Reverse: ")


def test_scorers() -> None:
    assert tasks.score("exact_match", " 82 ", "82") == 1.0
    assert tasks.score("exact_match", "83", "82") == 0.0
    assert tasks.score("json_equal", '{"age": 13, "name": "Gko"}', '{"name": "Gko", "age": 13}') == 1.0
    assert tasks.score("json_equal", '{"name": "Gko", "age": 14}', '{"name": "Gko", "age": 13}') == 0.0
    assert tasks.score("json_equal", '{"name": "Gko", "age"', '{"name": "Gko", "age": 13}') == 0.0
    items = [
        {"category": "copy", "scorer": "exact_match", "reference": "ab"},
        {"category": "copy", "scorer": "exact_match", "reference": "cd"},
        {"category": "json", "scorer": "json_equal", "reference": '{"a": 1}'},
    ]
    assert tasks.category_scores(items, ["ab", "xx", '{"a":1}']) == {
        "copy": 0.5,
        "json": 1.0,
        "overall": round(2 / 3, 4),
    }


def test_training_stream_excludes_eval_prompts() -> None:
    items = tasks.read_jsonl(EVALSET)
    excluded = tasks.eval_prompts(items)
    assert len(excluded) == 400
    unfiltered = [ex.prompt for ex in itertools.islice(tasks.training_stream(0), 40_000)]
    # The arithmetic space is small: without the filter the stream does hit eval prompts...
    assert any(p in excluded for p in unfiltered)
    # ...and with it, never.
    filtered = itertools.islice(tasks.training_stream(0, excluded), 40_000)
    assert not any(ex.prompt in excluded for ex in filtered)


def test_evalset_file_is_well_formed() -> None:
    items = tasks.read_jsonl(EVALSET)
    assert len(items) == 400
    assert Counter(item["category"] for item in items) == {c: 100 for c in tasks.CATEGORIES}
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids)
    prompts = [item["messages"][0]["content"] for item in items]
    assert len(set(prompts)) == len(prompts)
    for item in items:
        assert set(item) == {"id", "category", "messages", "reference", "scorer"}
        assert re.fullmatch(rf"{item['category']}-\d{{4}}", item["id"])
        assert item["messages"] == [{"role": "user", "content": item["messages"][0]["content"]}]
        assert item["scorer"] == tasks.SCORERS[item["category"]]
        # The reference is a perfect answer under its own scorer.
        assert tasks.score(item["scorer"], item["reference"], item["reference"]) == 1.0
    assert {"json_equal", "exact_match"} == {item["scorer"] for item in items}


def test_evalset_file_is_reproducible() -> None:
    """The committed file is exactly what the seeded generator writes."""
    assert tasks.read_jsonl(EVALSET) == tasks.eval_items()


def test_evalset_yaml_matches_the_file() -> None:
    spec = yaml.safe_load(EVALSET_YAML.read_text())
    assert spec["name"] == "synthetic_chat_v1"
    assert (EVALSET_YAML.parent / spec["file"]) == EVALSET
    assert set(spec["categories"]) == set(tasks.CATEGORIES)
    for name, cat in spec["categories"].items():
        assert cat["scorer"] == tasks.SCORERS[name]
        assert 0 < cat["min_score"] <= 1
        assert 0 <= cat["max_drop"] < 1
        assert cat["items"] == 100
