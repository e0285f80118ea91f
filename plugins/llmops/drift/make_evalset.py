"""CLI: write the weekly drift eval set ``tiny_chat_weekly_v1`` for the project's tiny models.

    PYTHONPATH=plugins python -m llmops.drift.make_evalset --out include/evalsets/tiny_chat_weekly_v1.jsonl

The same four tasks the model maker trains (see :mod:`llmops.modelmaker.tasks`), other seeded
prompts: 50 per category, in the plain ``prompt`` form (the other shipped set uses chat
``messages``), none of them in ``synthetic_chat_v1``. Deterministic: a rerun writes the same
bytes, so the file's content hash (the series key) only changes when the items do.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from llmops.modelmaker.tasks import CATEGORIES, GENERATORS, SCORERS, eval_items, eval_prompts, write_jsonl

NAME = "tiny_chat_weekly_v1"
SEED = 20261130
PER_CATEGORY = 50


def weekly_items(seed: int = SEED, per_category: int = PER_CATEGORY) -> list[dict[str, Any]]:
    """``per_category`` unique prompts per task, none shared with the held-out set ``synthetic_chat_v1``."""
    excluded = eval_prompts(eval_items())
    items: list[dict[str, Any]] = []
    for index, category in enumerate(CATEGORIES):
        rng = random.Random(seed * 100 + index)
        seen: set[str] = set()
        while len(seen) < per_category:
            example = GENERATORS[category](rng)
            if example.prompt in seen or example.prompt in excluded:
                continue
            seen.add(example.prompt)
            items.append({"id": f"weekly-{category}-{len(seen):03d}", "category": category, "prompt": example.prompt,
                          "reference": example.answer, "scorer": SCORERS[category]})
    return items


def main(argv: list[str] | None = None) -> int:
    """Write the eval set to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    args = parser.parse_args(argv)
    items = weekly_items()
    write_jsonl(items, args.out)
    print(f"wrote {len(items)} items to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
