"""CLI: Hugging Face greedy answers of a checkpoint on eval items (runs in the vLLM venv).

``python -m llmops.modelmaker.predict --model DIR --evalset FILE [--ids a,b] [--out answers.json]``

Writes ``{"answers": {id: answer}, "scores": {category: rate, "overall": rate}}``; the
reference the vLLM serving test compares against.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    """Answer the selected eval items greedily and print or write the JSON result."""
    from llmops.modelmaker.tasks import read_jsonl
    from llmops.modelmaker.train import evaluate_dir, set_threads

    parser = argparse.ArgumentParser(prog="python -m llmops.modelmaker.predict", description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--evalset", type=Path, required=True)
    parser.add_argument("--ids", default="", help="comma-separated item ids (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: stdout)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    items = read_jsonl(args.evalset)
    if args.ids:
        wanted = set(args.ids.split(","))
        items = [item for item in items if item["id"] in wanted]
    scores, answers = evaluate_dir(args.model, items)
    result = {"answers": {item["id"]: a for item, a in zip(items, answers, strict=True)}, "scores": scores}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
