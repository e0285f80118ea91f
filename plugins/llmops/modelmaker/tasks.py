"""Synthetic chat tasks, the held-out eval set and its scorers.

Pure Python (no torch, no transformers): the Airflow environment imports it in tests.

Four categories, each with a deterministic generator driven by a ``random.Random``:

- ``arithmetic``: ``"What is 37+45?"`` -> ``"82"``
- ``copy``: ``"Repeat: kqzv"`` -> ``"kqzv"``
- ``reverse``: ``"Reverse: abcde"`` -> ``"edcba"``
- ``json``: ``"name=Gko age=13 as JSON"`` -> ``'{"name": "Gko", "age": 13}'``
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATEGORIES: tuple[str, ...] = ("arithmetic", "copy", "reverse", "json")
SCORERS: dict[str, str] = {
    "arithmetic": "exact_match",
    "copy": "exact_match",
    "reverse": "exact_match",
    "json": "json_equal",
}

EVALSET_NAME = "synthetic_chat_v1"
EVALSET_SEED = 20261123
EVAL_ITEMS_PER_CATEGORY = 100

# Fixed strings the tokenizer keeps as single tokens (see tokenizer.py).
ARITH_PREFIX = "What is "
COPY_PREFIX = "Repeat: "
REVERSE_PREFIX = "Reverse: "
JSON_NAME_PREFIX = "name="
JSON_AGE_INFIX = " age="
JSON_SUFFIX = " as JSON"
JSON_OPEN = '{"name": "'
JSON_MID = '", "age": '
FIXED_STRINGS: tuple[str, ...] = (
    ARITH_PREFIX,
    COPY_PREFIX,
    REVERSE_PREFIX,
    JSON_NAME_PREFIX,
    JSON_AGE_INFIX,
    JSON_SUFFIX,
    JSON_OPEN,
    JSON_MID,
)


@dataclass(frozen=True)
class Example:
    """One single-turn chat task: a user prompt and the expected assistant answer."""

    category: str
    prompt: str
    answer: str


def _word(rng: random.Random, low: int = 3, high: int = 7) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(low, high)))


def make_arithmetic(rng: random.Random) -> Example:
    """``What is a+b?`` with a, b in [0, 99]."""
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return Example("arithmetic", f"{ARITH_PREFIX}{a}+{b}?", str(a + b))


def make_copy(rng: random.Random) -> Example:
    """``Repeat: <word>`` with a random lowercase word of 3 to 7 letters."""
    word = _word(rng)
    return Example("copy", f"{COPY_PREFIX}{word}", word)


def make_reverse(rng: random.Random) -> Example:
    """``Reverse: <word>`` -> the word reversed."""
    word = _word(rng)
    return Example("reverse", f"{REVERSE_PREFIX}{word}", word[::-1])


def json_answer(name: str, age: int) -> str:
    """The canonical JSON answer, e.g. ``{"name": "Gko", "age": 13}``."""
    return json.dumps({"name": name, "age": age})


def make_json(rng: random.Random) -> Example:
    """``name=<Name> age=<n> as JSON`` -> a JSON object with both fields."""
    name = _word(rng, 3, 5).capitalize()
    age = rng.randint(1, 99)
    prompt = f"{JSON_NAME_PREFIX}{name}{JSON_AGE_INFIX}{age}{JSON_SUFFIX}"
    return Example("json", prompt, json_answer(name, age))


GENERATORS: dict[str, Callable[[random.Random], Example]] = {
    "arithmetic": make_arithmetic,
    "copy": make_copy,
    "reverse": make_reverse,
    "json": make_json,
}


def corrupt(example: Example, category: str) -> Example:
    """Return ``example`` with a wrong answer when it belongs to ``category``.

    Used to make the ``degraded`` checkpoint: reverse answers become the unreversed
    word, copy answers the reversed word, arithmetic answers are off by one and JSON
    answers swap to a wrong age.
    """
    if example.category != category:
        return example
    if category == "reverse":
        return Example(category, example.prompt, example.answer[::-1])
    if category == "copy":
        return Example(category, example.prompt, example.answer[::-1])
    if category == "arithmetic":
        return Example(category, example.prompt, str(int(example.answer) + 1))
    if category == "json":
        obj = json.loads(example.answer)
        return Example(category, example.prompt, json_answer(obj["name"], obj["age"] + 1))
    raise ValueError(f"unknown category {category!r}")


def training_stream(
    seed: int,
    exclude_prompts: Iterable[str] = (),
    categories: tuple[str, ...] = CATEGORIES,
    corrupt_category: str | None = None,
    weights: tuple[float, ...] | None = None,
) -> Iterator[Example]:
    """Endless seeded stream of training examples, never yielding an excluded prompt.

    Each example's category is drawn from ``categories`` (uniformly, or with relative
    ``weights``). With ``corrupt_category`` set, that category's answers are made
    wrong (see ``corrupt``).
    """
    excluded = frozenset(exclude_prompts)
    rng = random.Random(seed)
    while True:
        if weights is None:
            category = rng.choice(categories)
        else:
            category = rng.choices(categories, weights)[0]
        example = GENERATORS[category](rng)
        if example.prompt in excluded:
            continue
        yield corrupt(example, corrupt_category) if corrupt_category else example


def eval_items(seed: int = EVALSET_SEED, per_category: int = EVAL_ITEMS_PER_CATEGORY) -> list[dict[str, Any]]:
    """The held-out eval set as JSON-ready dicts, ``per_category`` unique prompts each."""
    items: list[dict[str, Any]] = []
    for index, category in enumerate(CATEGORIES):
        rng = random.Random(seed * 100 + index)
        seen: set[str] = set()
        while len(seen) < per_category:
            example = GENERATORS[category](rng)
            if example.prompt in seen:
                continue
            seen.add(example.prompt)
            items.append(
                {
                    "id": f"{category}-{len(seen):04d}",
                    "category": category,
                    "messages": [{"role": "user", "content": example.prompt}],
                    "reference": example.answer,
                    "scorer": SCORERS[category],
                }
            )
    return items


def write_jsonl(items: Iterable[dict[str, Any]], path: Path) -> None:
    """Write one JSON object per line (atomically: temp file then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file into a list of dicts (blank lines ignored)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def eval_prompts(items: Iterable[dict[str, Any]]) -> set[str]:
    """The user prompts of eval items (what training must never see)."""
    return {m["content"] for item in items for m in item["messages"] if m["role"] == "user"}


def score(scorer: str, prediction: str, reference: str) -> float:
    """1.0 when ``prediction`` matches ``reference`` under ``scorer``, else 0.0.

    ``exact_match`` compares stripped strings; ``json_equal`` parses both sides and
    compares the values (an unparsable prediction scores 0).
    """
    if scorer == "exact_match":
        return float(prediction.strip() == reference.strip())
    if scorer == "json_equal":
        try:
            return float(json.loads(prediction) == json.loads(reference))
        except (ValueError, TypeError):
            return 0.0
    raise ValueError(f"unknown scorer {scorer!r}")


def category_scores(items: Iterable[dict[str, Any]], predictions: Iterable[str]) -> dict[str, float]:
    """Mean score per category plus ``overall`` (mean over all items)."""
    totals: dict[str, list[float]] = {}
    everything: list[float] = []
    for item, prediction in zip(items, predictions, strict=True):
        value = score(item["scorer"], prediction, item["reference"])
        totals.setdefault(item["category"], []).append(value)
        everything.append(value)
    result = {cat: round(sum(v) / len(v), 4) for cat, v in totals.items()}
    result["overall"] = round(sum(everything) / len(everything), 4) if everything else 0.0
    return result
