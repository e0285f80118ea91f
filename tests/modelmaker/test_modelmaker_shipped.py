"""The checkpoints shipped in include/models/tiny-chat: installing them, and rebuilding them bit for bit."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.modelmaker import shipped

REFRESH = "make models-rebuild"


def _install(src: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "llmops.modelmaker", "install", "--from", str(src), "--out", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


def _sums(shipped_dir: Path) -> dict[str, str]:
    return shipped.read_sums(shipped_dir / shipped.SUMS)


def test_shipped_files_match_their_sha256sums(shipped_dir: Path) -> None:
    sums = _sums(shipped_dir)
    assert sorted(sums) == sorted(shipped.expected_paths()), "SHA256SUMS lists exactly the shipped files"
    assert shipped.mismatches(shipped_dir, sums) == []
    for variant in shipped.VARIANTS:
        assert sorted(p.name for p in (shipped_dir / variant).iterdir()) == sorted(shipped.FILES), variant
        size = sum((shipped_dir / variant / name).stat().st_size for name in shipped.FILES)
        assert size < 5_000_000, f"{variant} is {size} bytes: the shipped checkpoints must stay small"


def test_shipped_file_list_is_the_makers() -> None:
    from llmops.modelmaker import maker  # pure Python at import time (torch is imported inside functions)

    assert shipped.FILES == (*maker.MODEL_FILES, maker.MAKER_JSON)
    assert shipped.VARIANTS == maker.VARIANTS


def test_shipped_maker_json_holds_nothing_machine_specific(shipped_dir: Path) -> None:
    metas = [json.loads((shipped_dir / v / "maker.json").read_text()) for v in shipped.VARIANTS]
    for meta in metas:
        assert not [k for k in meta if k.endswith("_seconds")], meta
        text = json.dumps(meta)
        assert str(Path.home()) not in text and "/tmp" not in text and str(shipped_dir.parents[2]) not in text
    assert len({(m["seed"], m["config_hash"]) for m in metas}) == 1, "the three variants come from one run"


def test_install_copies_verifies_and_then_is_a_noop(shipped_dir: Path, tmp_path: Path,
                                                     venv_env: dict[str, str]) -> None:
    out = tmp_path / "models" / "tiny-chat"
    first = _install(shipped_dir, out, venv_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("installed in") == 3, first.stdout
    assert shipped.mismatches(out, _sums(shipped_dir)) == []
    assert all(oct((out / rel).stat().st_mode & 0o777) == "0o644" for rel in shipped.expected_paths())
    before = {rel: (out / rel).stat().st_mtime_ns for rel in shipped.expected_paths()}
    again = _install(shipped_dir, out, venv_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already installed") == 3, again.stdout
    assert before == {rel: (out / rel).stat().st_mtime_ns for rel in shipped.expected_paths()}
    assert not [p.name for p in out.iterdir() if p.name.startswith((".install-", ".trash-"))]


def test_install_replaces_a_damaged_installed_copy(shipped_dir: Path, tmp_path: Path,
                                                   venv_env: dict[str, str]) -> None:
    out = tmp_path / "tiny-chat"
    assert _install(shipped_dir, out, venv_env).returncode == 0
    (out / "better" / "config.json").write_text("{}")
    proc = _install(shipped_dir, out, venv_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "better: installed" in proc.stdout and "good: already installed" in proc.stdout
    assert shipped.mismatches(out, _sums(shipped_dir)) == []


def test_install_refuses_a_tampered_shipped_file(shipped_dir: Path, tmp_path: Path,
                                                 venv_env: dict[str, str]) -> None:
    src = tmp_path / "shipped"
    shutil.copytree(shipped_dir, src)
    tampered = src / "degraded" / "model.safetensors"
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    out = tmp_path / "out"
    proc = _install(src, out, venv_env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{tampered}: SHA-256" in proc.stderr and "refusing to install" in proc.stderr, proc.stderr
    assert REFRESH in proc.stderr
    # Nothing was installed, not even the intact variants.
    assert not any((out / v).exists() for v in shipped.VARIANTS)


def test_install_needs_no_torch(shipped_dir: Path, tmp_path: Path, venv_env: dict[str, str]) -> None:
    code = (
        "import sys; from llmops.modelmaker.__main__ import main; "
        f"rc = main(['install', '--from', {str(shipped_dir)!r}, '--out', {str(tmp_path / 'out')!r}]); "
        "heavy = sorted(m for m in ('torch', 'transformers', 'tokenizers', 'llmops.modelmaker.train') "
        "if m in sys.modules); "
        "assert rc == 0 and not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=venv_env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rebuild_matches_the_shipped_checkpoints_bit_for_bit(rebuilt_dir: Path, shipped_dir: Path) -> None:
    """The maker, run from scratch, writes exactly the shipped bytes (weights, tokenizer, maker.json)."""
    sums = _sums(shipped_dir)
    differing = shipped.mismatches(rebuilt_dir, sums)
    if not differing:
        return
    lines = [f"the rebuilt checkpoints in {rebuilt_dir} differ from the shipped ones in {shipped_dir}:"]
    lines += [f"  {problem}" for problem in differing]
    rebuilt_meta = json.loads((rebuilt_dir / "good" / "maker.json").read_text())
    shipped_meta = json.loads((shipped_dir / "good" / "maker.json").read_text())
    if rebuilt_meta.get("config_hash") != shipped_meta.get("config_hash"):
        lines.append("the maker's config, code, eval set or library versions changed since the copy was shipped "
                     "(config_hash differs).")
    weights = [f"{v}/model.safetensors" for v in shipped.VARIANTS]
    if any(hashlib.sha256((rebuilt_dir / w).read_bytes()).hexdigest() != sums[w] for w in weights):
        lines.append("the weights differ: if the maker did not change, training is not reproducible here "
                     "(different torch build or CPU kernels?).")
    lines.append(f"If the change is intended, refresh the shipped copy with `{REFRESH}` "
                 "(or: PYTHONPATH=plugins .venv-vllm/bin/python -m llmops.modelmaker ship "
                 f"--from {rebuilt_dir} --to include/models/tiny-chat) and commit include/models/tiny-chat.")
    pytest.fail("\n".join(lines), pytrace=False)
