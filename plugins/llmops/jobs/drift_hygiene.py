"""Pod job: check the eval sets a weekly drift run will use (Great Expectations), before any model is served.

    python -m llmops.jobs.drift_hygiene --evalsets-dir include/evalsets [--only synthetic_chat_v1,...]

Every ``*.yaml`` in the folder (or the named sets) is checked by :mod:`llmops.evals.hygiene`.
Result (``return.json``): ``{"evalsets": [{name, config, revision, items, categories, ok, errors,
warnings}, ...]}``. Exit 2 when a set fails (duplicates, empty references, a broken schema) or
a named set does not exist: the log names the file, the failing check and the lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmops.core.podjob import VERDICT_EXIT_CODE
from llmops.jobs.common import setup_logging, write_result

log = setup_logging("llmops.jobs.drift_hygiene")

EXIT_INVALID = VERDICT_EXIT_CODE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evalsets-dir", type=Path, default=Path("include/evalsets"),
                        help="folder of eval-set YAML descriptions")
    parser.add_argument("--only", default="", help="comma-separated eval-set names (default: every set)")
    return parser.parse_args(argv)


def select(evalsets_dir: Path, only: list[str]) -> list[Path]:
    """The YAML files to check: all in the folder, or those whose file stem or ``name`` is in ``only``."""
    import yaml

    configs = sorted(evalsets_dir.glob("*.yaml"))
    if not configs:
        raise SystemExit(f"{evalsets_dir}: no eval-set YAML found; see docs/eval-drift.md to add one")
    if not only:
        return configs
    names: dict[str, Path] = {}
    for path in configs:
        try:
            names[str((yaml.safe_load(path.read_text()) or {}).get("name", path.stem))] = path
        except yaml.YAMLError:
            names[path.stem] = path  # the hygiene check reports the broken YAML
        names.setdefault(path.stem, path)
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SystemExit(f"eval sets {unknown} not found in {evalsets_dir}; available: {sorted(set(names))}")
    return sorted({names[n] for n in only})


def main(argv: list[str] | None = None) -> int:
    """Check the eval sets; exit 0 when all pass, 2 otherwise."""
    from llmops.evals.hygiene import check_evalsets

    args = parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    try:
        configs = select(args.evalsets_dir, only)
    except SystemExit as exc:
        log.error("%s", exc)
        return EXIT_INVALID
    results = check_evalsets(configs)
    # Paths relative to the working directory: the eval pods run in the same image and folder.
    summaries = [r.summary(root=Path.cwd()) for r in results]
    for result in results:
        log.info("%s (%s): %d items %s, revision %s: %s", result.name, result.data, result.items,
                 result.categories, result.revision, "ok" if result.ok else "FAILED")
        for warning in result.warnings:
            log.warning("%s: %s", result.data, warning.describe())
        for error in result.errors:
            log.error("%s: %s", result.data, error.describe())
    write_result({"evalsets": summaries, "ok": all(r.ok for r in results)})
    if not all(r.ok for r in results):
        log.error("eval set hygiene failed: fix the lines named above (docs/eval-drift.md) and rerun")
        return EXIT_INVALID
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
