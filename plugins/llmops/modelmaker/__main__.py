"""CLI of the model maker.

``python -m llmops.modelmaker [train] --out DIR [--variants good,better,degraded] [--force]``
trains the checkpoints (the vLLM environment: needs torch and transformers), printing
progress while it works and one JSON summary line per checkpoint (variant, seed, steps,
scores).

``python -m llmops.modelmaker install|verify|ship ...`` handle the checkpoints shipped in
``include/models/tiny-chat`` (standard library only, any Python; see ``shipped.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Offline and quiet before transformers is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``install``/``verify``/``ship``; otherwise make the checkpoints and print a summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("install", "verify", "ship"):
        from llmops.modelmaker import shipped

        return shipped.main(argv[0], argv[1:])
    if argv and argv[0] == "train":
        argv = argv[1:]
    from llmops.modelmaker.maker import VARIANTS, default_evalset, make

    parser = argparse.ArgumentParser(prog="python -m llmops.modelmaker", description=__doc__)
    parser.add_argument(
        "--out",
        type=Path,
        # The model cache holds other models too (staged drops): the maker's own go in tiny-chat/.
        default=Path(os.environ.get("LLMOPS_MODELS_DIR", ".data/models")) / "tiny-chat",
        help="folder receiving one subfolder per variant (default: $LLMOPS_MODELS_DIR/tiny-chat, "
             "LLMOPS_MODELS_DIR defaulting to .data/models)",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of good,better,degraded")
    parser.add_argument("--evalset", type=Path, default=None, help=f"eval set JSONL (default: {default_evalset()})")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    started = time.monotonic()
    metas = make(args.out, variants, args.evalset, force=args.force)
    for variant, meta in metas.items():
        summary = {k: meta[k] for k in ("variant", "seed", "steps", "scores")}
        print(json.dumps({"path": str(args.out / variant), **summary}))
    print(f"[modelmaker] done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
