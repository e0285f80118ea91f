"""``python -m llmops.reproduce <model> [--version N] [--apply]``: see :mod:`llmops.reproduce.cli`."""

from llmops.reproduce.cli import main

raise SystemExit(main())
