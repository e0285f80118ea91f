"""CLI: write the seeded held-out eval set ``synthetic_chat_v1`` as JSONL.

``python -m llmops.modelmaker.evalset --out include/evalsets/synthetic_chat_v1.jsonl``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmops.modelmaker.tasks import EVAL_ITEMS_PER_CATEGORY, EVALSET_SEED, eval_items, write_jsonl


def main(argv: list[str] | None = None) -> int:
    """Generate the eval set and write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    parser.add_argument("--seed", type=int, default=EVALSET_SEED)
    parser.add_argument("--per-category", type=int, default=EVAL_ITEMS_PER_CATEGORY)
    args = parser.parse_args(argv)
    items = eval_items(args.seed, args.per_category)
    write_jsonl(items, args.out)
    print(f"wrote {len(items)} items to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
