"""Make the ``good``, ``better`` and ``degraded`` checkpoints, cached and atomically written.

One seeded training trajectory per seed: ``good`` is the snapshot after
``good_steps``; ``better`` continues the same run (same optimiser, same schedule) for
``better_steps`` more; ``degraded`` is ``better`` plus a few steps at a low learning
rate on a stream where one category's answers are wrong. Each snapshot is saved in
Hugging Face format and scored with HF greedy decoding on the held-out eval set; if a
seed's checkpoints miss the acceptance thresholds, the next seed of a fixed list is
tried (deterministic). Each checkpoint directory gets a ``maker.json``; a later run
whose config hash matches does nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops.modelmaker import tasks
from llmops.modelmaker.train import ModelConfig, OptimConfig

VARIANTS: tuple[str, ...] = ("good", "better", "degraded")
MAKER_JSON = "maker.json"
MODEL_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_SOURCES: tuple[str, ...] = ("tasks.py", "tokenizer.py", "train.py", "maker.py")


@dataclass(frozen=True)
class MakerConfig:
    """Everything that decides the checkpoints' weights (hashed into ``config_hash``).

    ``good`` is the first snapshot, probed every ``probe_every`` steps from
    ``probe_start`` on, whose scores fall in the good band (every category at least
    ``good_min_category``, overall within ``good_overall``); ``better`` is the end of
    the same run at ``total_steps``; ``degraded`` adds ``degraded_steps`` at
    ``degraded_lr`` with ``degraded_category``'s answers corrupted.
    """

    # Tried in order; seed 1 is known to pass every threshold with this config
    # (measured: good 0.865 at step 2000, better 1.0, degraded reverse 0.03).
    seeds: tuple[int, ...] = (1, 0, 2, 3, 4, 5)
    total_steps: int = 5000
    probe_start: int = 1000
    probe_every: int = 100
    probe_stop: int = 3500
    category_weights: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)
    degraded_steps: int = 60
    degraded_lr: float = 3e-4
    degraded_category: str = "reverse"
    threads: int = 2
    tokenizer_seed: int = 7
    tokenizer_corpus: int = 2000
    tokenizer_merges: int = 0
    # Acceptance thresholds for a seed (absolute exact-match rates).
    good_min_category: float = 0.55
    good_overall: tuple[float, float] = (0.6, 0.92)
    better_min_overall: float = 0.95
    better_max_category_drop: float = 0.01
    degraded_max_target: float = 0.3
    degraded_min_others: float = 0.85
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def default_evalset() -> Path:
    """The repository's eval set (``include/evalsets/synthetic_chat_v1.jsonl``)."""
    return Path(__file__).resolve().parents[3] / "include" / "evalsets" / f"{tasks.EVALSET_NAME}.jsonl"


def config_hash(cfg: MakerConfig, evalset: Path) -> str:
    """SHA-256 over the config, the maker's source, the eval set and library versions."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(cfg), sort_keys=True).encode())
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    digest.update(evalset.read_bytes())
    for dist in ("torch", "transformers", "tokenizers", "safetensors"):
        digest.update(f"{dist}=={version(dist)}".encode())
    return digest.hexdigest()


def read_maker_json(model_dir: Path) -> dict[str, Any] | None:
    """The checkpoint's ``maker.json`` if the directory looks complete, else None."""
    meta = model_dir / MAKER_JSON
    if not meta.is_file() or not all((model_dir / f).is_file() for f in MODEL_FILES):
        return None
    try:
        return json.loads(meta.read_text())
    except ValueError:
        return None


def cached(out: Path, variants: list[str], chash: str) -> dict[str, dict[str, Any]] | None:
    """maker.json of every requested variant when all are valid for ``chash`` and share a seed."""
    found: dict[str, dict[str, Any]] = {}
    for variant in variants:
        meta = read_maker_json(out / variant)
        if meta is None or meta.get("config_hash") != chash:
            return None
        found[variant] = meta
    if len({meta["seed"] for meta in found.values()}) > 1:
        return None
    return found


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".maker.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clean_stale(out: Path) -> None:
    """Remove work folders left by an interrupted run (safe: called under the lock)."""
    for stale in [*out.glob(".tmp-*"), *out.glob(".trash-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` with renames (never a half-written ``final``)."""
    trash = final.with_name(f".trash-{final.name}-{os.getpid()}")
    if final.exists():
        final.rename(trash)
    tmp.rename(final)
    shutil.rmtree(trash, ignore_errors=True)


def good_band(cfg: MakerConfig, scores: dict[str, float]) -> bool:
    """Whether a snapshot's scores qualify it as the ``good`` checkpoint."""
    low, high = cfg.good_overall
    every = all(scores[c] >= cfg.good_min_category for c in tasks.CATEGORIES)
    return every and low <= scores["overall"] <= high


def rejections(cfg: MakerConfig, variant: str, scores: dict[str, dict[str, float]]) -> list[str]:
    """Reasons the seed's ``variant`` checkpoint falls short (empty: accepted)."""
    s = scores[variant]
    reasons: list[str] = []
    if variant == "better":
        g = scores["good"]
        if s["overall"] < cfg.better_min_overall:
            reasons.append(f"better overall={s['overall']} < {cfg.better_min_overall}")
        for c in tasks.CATEGORIES:
            if s[c] < g[c] - cfg.better_max_category_drop:
                reasons.append(f"better {c}={s[c]} dropped below good's {g[c]}")
    elif variant == "degraded":
        target = cfg.degraded_category
        if s[target] > cfg.degraded_max_target:
            reasons.append(f"degraded {target}={s[target]} > {cfg.degraded_max_target}")
        for c in tasks.CATEGORIES:
            if c != target and s[c] < cfg.degraded_min_others:
                reasons.append(f"degraded {c}={s[c]} < {cfg.degraded_min_others}")
    return reasons


def _stages(variants: list[str]) -> list[str]:
    last = max(VARIANTS.index(v) for v in variants)
    return list(VARIANTS[: last + 1])


class _Snapshotter:
    """Saves and scores snapshots of one run into ``work/<variant>`` with their metadata."""

    def __init__(self, cfg: MakerConfig, seed: int, items: list[dict[str, Any]], work: Path, chash: str) -> None:
        self.cfg, self.seed, self.items, self.work, self.chash = cfg, seed, items, work, chash
        self.metas: dict[str, dict[str, Any]] = {}
        self.scores: dict[str, dict[str, float]] = {}

    def snapshot(self, model: Any, tokenizer: Any, name: str) -> dict[str, float]:
        """Save the model as ``work/<name>`` and return its HF greedy scores."""
        from llmops.modelmaker import train

        target = self.work / name
        shutil.rmtree(target, ignore_errors=True)
        train.save_checkpoint(model, tokenizer, target)
        scores, _ = train.evaluate_dir(target, self.items, progress_s=5.0)
        return scores

    def record(
        self, variant: str, name: str, scores: dict[str, float], step: int, loss: float, t: dict[str, float]
    ) -> None:
        """Keep ``work/<name>`` as ``variant`` with its maker.json content."""
        if name != variant:
            shutil.rmtree(self.work / variant, ignore_errors=True)
            (self.work / name).rename(self.work / variant)
        self.scores[variant] = scores
        self.metas[variant] = {
            "variant": variant,
            "seed": self.seed,
            "steps": step,
            "final_loss": round(loss, 5),
            "config_hash": self.chash,
            "config": asdict(self.cfg),
            "corrupted_category": self.cfg.degraded_category if variant == "degraded" else None,
            "scores": scores,
            "scorer": "hf_greedy",
            # No wall times or paths: maker.json is shipped and compared byte for byte with a rebuild.
        }
        print(
            f"[modelmaker] seed {self.seed} {variant} @ step {step}: {scores} ({t['train'] + t['eval']:.1f} s)",
            flush=True,
        )


def _run_seed(
    cfg: MakerConfig, seed: int, stages: list[str], items: list[dict[str, Any]], work: Path, chash: str
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Train one seed's run into ``work/<variant>``; return metadata and rejection reasons."""
    from llmops.modelmaker import train
    from llmops.modelmaker.tokenizer import build_tokenizer

    train.set_threads(cfg.threads)
    print(f"[modelmaker] seed {seed}: building the tokenizer and the model", flush=True)
    exclude = tasks.eval_prompts(items)
    corpus = list(itertools.islice(tasks.training_stream(cfg.tokenizer_seed, exclude), cfg.tokenizer_corpus))
    tokenizer = build_tokenizer(corpus, cfg.tokenizer_merges)
    model = train.new_model(tokenizer.get_vocab_size(), tokenizer, cfg.model, seed)
    optimizer = train.make_optimizer(model, cfg.optim)
    lr_at = train.cosine_lr(cfg.optim, cfg.total_steps)
    stream = tasks.training_stream(seed, exclude, weights=cfg.category_weights)
    data = train.batches(tokenizer, stream, cfg.optim.batch_size)
    snaps = _Snapshotter(cfg, seed, items, work, chash)
    timing = {"train": 0.0, "eval": 0.0}

    def segment(stop: int, start: int) -> float:
        began = time.monotonic()
        loss = train.train_steps(model, optimizer, data, range(start, stop), lr_at, cfg.optim.grad_clip)
        timing["train"] += time.monotonic() - began
        return loss

    def scored(name: str) -> dict[str, float]:
        print(f"[modelmaker] seed {seed}: scoring {name} at step {step} ({len(items)} eval items)", flush=True)
        began = time.monotonic()
        scores = snaps.snapshot(model, tokenizer, name)
        timing["eval"] += time.monotonic() - began
        return scores

    print(f"[modelmaker] seed {seed}: training good (probing from step {cfg.probe_start})", flush=True)
    step = 0
    while "good" not in snaps.metas:
        stop = cfg.probe_start if step == 0 else step + cfg.probe_every
        if stop > cfg.probe_stop:
            return snaps.metas, [f"no snapshot in the good band by step {cfg.probe_stop}"]
        loss = segment(stop, step)
        step = stop
        scores = scored("probe")
        if good_band(cfg, scores):
            snaps.record("good", "probe", scores, step, loss, timing)
        else:
            print(f"[modelmaker] seed {seed}: probe @ step {step} not in the good band: {scores}", flush=True)
    if "better" in stages:
        timing = {"train": 0.0, "eval": 0.0}
        print(f"[modelmaker] seed {seed}: training better (to step {cfg.total_steps})", flush=True)
        loss = segment(cfg.total_steps, step)
        step = cfg.total_steps
        snaps.record("better", "better", scored("better"), step, loss, timing)
        if reasons := rejections(cfg, "better", snaps.scores):
            return snaps.metas, reasons
    if "degraded" in stages:
        timing = {"train": 0.0, "eval": 0.0}
        print(f"[modelmaker] seed {seed}: training degraded ({cfg.degraded_category} corrupted)", flush=True)
        optimizer = train.make_optimizer(model, cfg.optim)
        corrupted = tasks.training_stream(seed + 10_000, exclude, corrupt_category=cfg.degraded_category)
        data = train.batches(tokenizer, corrupted, cfg.optim.batch_size)
        lr = cfg.degraded_lr
        began = time.monotonic()
        steps = range(step, step + cfg.degraded_steps)
        loss = train.train_steps(model, optimizer, data, steps, lambda _s: lr, cfg.optim.grad_clip)
        timing["train"] = time.monotonic() - began
        step = steps.stop
        snaps.record("degraded", "degraded", scored("degraded"), step, loss, timing)
        if reasons := rejections(cfg, "degraded", snaps.scores):
            return snaps.metas, reasons
    return snaps.metas, []


def make(
    out: Path,
    variants: list[str] | None = None,
    evalset: Path | None = None,
    cfg: MakerConfig | None = None,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Make (or reuse) the requested checkpoints under ``out/<variant>``; return their maker.json.

    Raises RuntimeError when no seed of ``cfg.seeds`` meets the acceptance thresholds.
    """
    cfg = cfg or MakerConfig()
    variants = list(variants or VARIANTS)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    evalset = evalset or default_evalset()
    out = Path(out)
    with _locked(out):
        chash = config_hash(cfg, evalset)
        hit = None if force else cached(out, variants, chash)
        if hit is not None:
            print(f"[modelmaker] cached: {', '.join(variants)} in {out} (config {chash[:12]})")
            return hit
        _clean_stale(out)
        items = tasks.read_jsonl(evalset)
        stages = _stages(variants)
        failures: list[str] = []
        for seed in cfg.seeds:
            work = out / f".tmp-seed{seed}-{os.getpid()}"
            shutil.rmtree(work, ignore_errors=True)
            try:
                metas, rejected = _run_seed(cfg, seed, stages, items, work, chash)
                if rejected:
                    print(f"[modelmaker] seed {seed} rejected: {'; '.join(rejected)}", flush=True)
                    failures.append(f"seed {seed}: {'; '.join(rejected)}")
                    continue
                for variant, meta in metas.items():
                    (work / variant / MAKER_JSON).write_text(json.dumps(meta, indent=2) + "\n")
                    _publish(work / variant, out / variant)
                return {v: metas[v] for v in variants}
            finally:
                shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError("no seed met the thresholds: " + " | ".join(failures))
