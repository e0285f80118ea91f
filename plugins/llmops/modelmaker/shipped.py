"""The shipped checkpoints: install them (copy + SHA-256 check) or ship a fresh build.

The repository carries the model maker's three checkpoints under
``include/models/tiny-chat/<variant>/`` with a ``sha256sum``-compatible ``SHA256SUMS``
(one ``<sha256>  <variant>/<file>`` line per file). ``make models`` installs them in
seconds instead of training; ``make test`` rebuilds them with the maker from scratch and
compares every file byte for byte (``tests/modelmaker``); ``make models-rebuild`` retrains
and refreshes the shipped copy.

Standard library only (no torch): it runs with any Python 3.11, the Airflow venv's included::

    python -m llmops.modelmaker install [--from include/models/tiny-chat] [--out DIR]
    python -m llmops.modelmaker verify DIR [--sums include/models/tiny-chat/SHA256SUMS]
    python -m llmops.modelmaker ship --from DIR [--to include/models/tiny-chat]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

# Kept equal to maker.MODEL_FILES + maker.MAKER_JSON (a test checks): not imported from
# there, so installing never imports the training code.
VARIANTS: tuple[str, ...] = ("good", "better", "degraded")
FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "maker.json",
)
SUMS = "SHA256SUMS"
REBUILD_HINT = (
    "refresh the shipped copy with `make models-rebuild` (retrains, rewrites include/models/tiny-chat "
    "and its SHA256SUMS; commit them), or restore it with `git checkout -- include/models/tiny-chat`"
)
_LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S+)$")
_CHUNK = 1 << 20


class ShippedModelsError(Exception):
    """A shipped or installed file is missing or does not match its SHA-256."""


def default_shipped() -> Path:
    """The repository's shipped checkpoints (``include/models/tiny-chat``)."""
    return Path(__file__).resolve().parents[3] / "include" / "models" / "tiny-chat"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_paths(variants: Iterable[str] = VARIANTS) -> list[str]:
    """Relative paths (``<variant>/<file>``) a complete set of checkpoints has."""
    return [f"{variant}/{name}" for variant in variants for name in FILES]


def read_sums(sums_file: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from a sha256sum-format file; malformed lines are refused."""
    if not sums_file.is_file():
        raise ShippedModelsError(f"{sums_file}: missing; {REBUILD_HINT}")
    sums: dict[str, str] = {}
    for number, line in enumerate(sums_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if not match:
            raise ShippedModelsError(f"{sums_file}:{number}: not a sha256sum line: {line!r}")
        sums[match.group(2)] = match.group(1)
    missing = [p for p in expected_paths() if p not in sums]
    if missing:
        raise ShippedModelsError(f"{sums_file}: no line for {', '.join(missing)}; {REBUILD_HINT}")
    return sums


def format_sums(sums: dict[str, str]) -> str:
    """sha256sum-format text, sorted by path (``cd <folder> && sha256sum -c SHA256SUMS`` checks it)."""
    return "".join(f"{sums[path]}  {path}\n" for path in sorted(sums))


def mismatches(folder: Path, sums: dict[str, str], variants: Iterable[str] = VARIANTS) -> list[str]:
    """One line per file of ``variants`` under ``folder`` that is missing or differs from ``sums``."""
    problems: list[str] = []
    for rel in expected_paths(variants):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        got = sha256_file(path)
        if got != sums[rel]:
            problems.append(f"{path}: SHA-256 {got} differs from SHA256SUMS ({sums[rel]})")
    return problems


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """The maker's lock on ``out`` (same file as maker.py's): never install under a running build."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".maker.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(message: str) -> None:
    print(f"[modelmaker] {message}", flush=True)


def _publish(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` with renames (never a half-written checkpoint)."""
    trash = final.with_name(f".trash-{final.name}-{os.getpid()}")
    if final.exists():
        final.rename(trash)
    tmp.rename(final)
    shutil.rmtree(trash, ignore_errors=True)


def install(src: Path, out: Path, variants: Iterable[str] = VARIANTS) -> dict[str, str]:
    """Copy the shipped checkpoints ``src/<variant>`` to ``out/<variant>``, verified; no training.

    The shipped files are checked against ``src/SHA256SUMS`` first: any mismatch refuses the
    whole install (nothing under ``out`` changes) with an error naming the file. A variant
    whose installed files already match is left alone (no copy, mtimes kept). Returns
    ``{variant: "installed" | "unchanged"}``.
    """
    src, out = Path(src), Path(out)
    variants = list(variants)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {VARIANTS}")
    started = time.monotonic()
    sums = read_sums(src / SUMS)
    _say(f"checking {len(variants) * len(FILES)} shipped files in {src} against {SUMS}")
    problems = mismatches(src, sums, variants)
    if problems:
        raise ShippedModelsError(
            "refusing to install: the shipped checkpoints do not match their SHA256SUMS:\n  "
            + "\n  ".join(problems)
            + f"\n{REBUILD_HINT}"
        )
    result: dict[str, str] = {}
    with _locked(out):
        for stale in [*out.glob(".install-*"), *out.glob(".trash-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        for variant in variants:
            final = out / variant
            if final.is_dir() and not mismatches(out, sums, [variant]):
                _say(f"{variant}: already installed in {final} (verified)")
                result[variant] = "unchanged"
                continue
            tmp = out / f".install-{variant}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for name in FILES:
                shutil.copyfile(src / variant / name, tmp / name)
                (tmp / name).chmod(0o644)  # serving pods may run as another user
                if sha256_file(tmp / name) != sums[f"{variant}/{name}"]:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise ShippedModelsError(f"{src / variant / name}: changed while being installed; run again")
            _publish(tmp, final)
            size = sum((final / n).stat().st_size for n in FILES)
            _say(f"{variant}: installed in {final} ({size / 1e6:.1f} MB, SHA-256 verified)")
            result[variant] = "installed"
    _say(f"done in {time.monotonic() - started:.1f} s (shipped checkpoints, no training)")
    return result


def ship(build: Path, dest: Path, variants: Iterable[str] = VARIANTS) -> dict[str, str]:
    """Copy a maker build ``build/<variant>`` into the shipped folder and rewrite its SHA256SUMS."""
    build, dest = Path(build), Path(dest)
    variants = list(variants)
    missing = [str(build / rel) for rel in expected_paths(variants) if not (build / rel).is_file()]
    if missing:
        raise ShippedModelsError(f"not a complete maker build: missing {', '.join(missing)}")
    metas = [json.loads((build / v / "maker.json").read_text()) for v in variants]
    if len({(m.get("seed"), m.get("config_hash")) for m in metas}) != 1:
        raise ShippedModelsError(f"{build}: the variants come from different maker runs (seed/config_hash)")
    sums: dict[str, str] = {}
    for variant in variants:
        (dest / variant).mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copyfile(build / variant / name, dest / variant / name)
            (dest / variant / name).chmod(0o644)
            sums[f"{variant}/{name}"] = sha256_file(dest / variant / name)
    (dest / SUMS).write_text(format_sums(sums))
    _say(f"shipped {len(sums)} files from {build} to {dest} with {SUMS}; commit {dest}")
    return sums


def main(command: str, argv: list[str] | None = None) -> int:
    """``install``, ``verify`` or ``ship`` (see the module docstring); errors exit 1 with the reason."""
    parser = argparse.ArgumentParser(prog=f"python -m llmops.modelmaker {command}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of good,better,degraded")
    if command == "install":
        parser.add_argument("--from", dest="src", type=Path, default=default_shipped(),
                            help="shipped checkpoints with their SHA256SUMS (default: include/models/tiny-chat)")
        parser.add_argument("--out", type=Path,
                            default=Path(os.environ.get("LLMOPS_MODELS_DIR", ".data/models")) / "tiny-chat",
                            help="folder receiving one subfolder per variant (default: $LLMOPS_MODELS_DIR/tiny-chat)")
    elif command == "verify":
        parser.add_argument("folder", type=Path, help="a folder of <variant>/ checkpoints (a build or an install)")
        parser.add_argument("--sums", type=Path, default=default_shipped() / SUMS,
                            help="sha256sum file to compare with (default: the shipped SHA256SUMS)")
    elif command == "ship":
        parser.add_argument("--from", dest="build", type=Path, required=True, help="the maker's output folder")
        parser.add_argument("--to", dest="dest", type=Path, default=default_shipped())
    else:
        raise ValueError(f"unknown command {command!r}")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        if command == "install":
            install(args.src, args.out, variants)
        elif command == "verify":
            problems = mismatches(args.folder, read_sums(args.sums), variants)
            if problems:
                raise ShippedModelsError(
                    f"{args.folder} differs from {args.sums}:\n  " + "\n  ".join(problems) + f"\n{REBUILD_HINT}"
                )
            _say(f"{args.folder}: every file matches {args.sums}")
        else:
            ship(args.build, args.dest, variants)
    except ShippedModelsError as exc:
        print(f"[modelmaker] error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
