"""The shipped checkpoints (installed as `make models` does): files, cache and the quality ordering."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

VARIANTS = ("good", "better", "degraded")
CATEGORIES = ("arithmetic", "copy", "reverse", "json")
HF_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "maker.json",
)


def test_checkpoints_are_complete_hf_dirs(models_dir: Path) -> None:
    for variant in VARIANTS:
        d = models_dir / variant
        missing = [f for f in HF_FILES if not (d / f).is_file()]
        assert not missing, f"{d} lacks {missing}"
        config = json.loads((d / "config.json").read_text())
        assert config["model_type"] == "llama"
        assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (128, 2, 4)
        assert config["intermediate_size"] == 512 and config["tie_word_embeddings"] is True
        tok_cfg = json.loads((d / "tokenizer_config.json").read_text())
        assert "<|im_start|>" in tok_cfg["chat_template"] and tok_cfg["eos_token"] == "<|im_end|>"
        vocab = {t["content"]: t["id"] for t in json.loads((d / "tokenizer.json").read_text())["added_tokens"]}
        gen = json.loads((d / "generation_config.json").read_text())
        assert gen["eos_token_id"] == vocab["<|im_end|>"] == config["eos_token_id"]
    # No half-written leftovers next to the checkpoints.
    assert not [p.name for p in models_dir.iterdir() if p.name.startswith(".tmp-")]


def test_maker_json_records_the_run(maker_meta: dict[str, dict[str, Any]]) -> None:
    hashes = {m["config_hash"] for m in maker_meta.values()}
    seeds = {m["seed"] for m in maker_meta.values()}
    assert len(hashes) == 1 and len(seeds) == 1, "the three variants come from one run"
    for variant, meta in maker_meta.items():
        assert meta["variant"] == variant
        assert set(CATEGORIES) | {"overall"} <= set(meta["scores"])
        # Shipped and compared byte for byte with a rebuild: nothing that varies between builds.
        assert not [k for k in meta if k.endswith("_seconds")], meta
    assert maker_meta["good"]["steps"] < maker_meta["better"]["steps"] < maker_meta["degraded"]["steps"]


def test_good_is_useful_and_better_is_better(maker_meta: dict[str, dict[str, Any]]) -> None:
    good, better = maker_meta["good"]["scores"], maker_meta["better"]["scores"]
    assert good["overall"] >= 0.6, good
    assert better["overall"] >= 0.95, better
    assert better["overall"] > good["overall"] + 0.03
    for cat in CATEGORIES:
        assert better[cat] >= good[cat] - 0.01, (cat, good, better)


def test_degraded_drops_one_category_only(maker_meta: dict[str, dict[str, Any]]) -> None:
    target = maker_meta["degraded"]["corrupted_category"]
    assert target == "reverse"
    good, degraded = maker_meta["good"]["scores"], maker_meta["degraded"]["scores"]
    assert degraded[target] <= 0.3 and good[target] - degraded[target] >= 0.5, degraded
    for cat in CATEGORIES:
        if cat != target:
            assert degraded[cat] >= 0.85, (cat, degraded)


def test_second_maker_run_is_cached(rebuilt_dir: Path, venv_python: Path, venv_env: dict[str, str]) -> None:
    before = {v: (rebuilt_dir / v / "model.safetensors").stat().st_mtime_ns for v in VARIANTS}
    started = time.monotonic()
    proc = subprocess.run(
        [str(venv_python), "-m", "llmops.modelmaker", "--out", str(rebuilt_dir)],
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    elapsed = time.monotonic() - started
    assert "cached" in proc.stdout, proc.stdout
    assert elapsed < 15, f"cached run took {elapsed:.1f} s"
    assert before == {v: (rebuilt_dir / v / "model.safetensors").stat().st_mtime_ns for v in VARIANTS}


def test_hf_scores_reproduce_maker_json(
    models_dir: Path,
    venv_python: Path,
    venv_env: dict[str, str],
    evalset_path: Path,
    maker_meta: dict[str, Any],
) -> None:
    """Re-scoring the saved good checkpoint with HF gives maker.json's numbers."""
    proc = subprocess.run(
        [
            str(venv_python),
            "-m",
            "llmops.modelmaker.predict",
            "--model",
            str(models_dir / "good"),
            "--evalset",
            str(evalset_path),
        ],
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(proc.stdout)["scores"] == maker_meta["good"]["scores"]
