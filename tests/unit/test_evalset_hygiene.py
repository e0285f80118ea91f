"""Eval-set hygiene with Great Expectations: the shipped sets pass; each broken rule is named with its lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.evals.hygiene import EvalSetHygieneError, check_evalset, prompt_text, require_clean

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "include" / "evalsets").glob("*.yaml"))


def _row(i: int, **over) -> dict:
    return {"id": f"arith-{i:03d}", "category": "arithmetic", "prompt": f"What is {i}+1?", "reference": str(i + 1),
            "scorer": "exact_match", **over}


def _write(tmp_path: Path, rows: list[dict | str], categories: tuple[str, ...] = ("arithmetic",)) -> Path:
    data = tmp_path / "set.jsonl"
    data.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    config = tmp_path / "set.yaml"
    config.write_text("name: tset\nfile: set.jsonl\ncategories:\n" + "".join(f"  {c}: {{}}\n" for c in categories))
    return config


def _failed(result) -> dict[str, str]:
    return {f"{c.check}({c.column})": c.detail for c in result.errors}


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.stem)
def test_shipped_eval_sets_pass_and_fit_the_size_range(config: Path) -> None:
    result = check_evalset(config)
    assert result.ok, result.message()
    assert result.warnings == [], [w.describe() for w in result.warnings]
    assert 50 <= result.items <= 500 and sum(result.categories.values()) == result.items
    assert len(result.revision) == 16


def test_a_clean_small_set_passes_with_a_size_warning(tmp_path: Path) -> None:
    result = check_evalset(_write(tmp_path, [_row(i) for i in range(10)]))
    assert result.ok and result.items == 10 and result.categories == {"arithmetic": 10}
    assert [w.check for w in result.warnings] == ["expect_table_row_count_to_be_between"]
    assert "10 items" in result.warnings[0].detail
    assert result.summary()["warnings"] and result.summary()["ok"] is True


def test_duplicates_and_empty_references_are_errors_with_their_lines(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(60)]
    rows[5] = _row(5, id="arith-001")                      # duplicate id (line 6 and line 2)
    rows[7] = _row(7, prompt="What is 3+1?")               # duplicate prompt (line 8 and line 4)
    rows[9] = _row(9, reference="   ")                     # empty reference (line 10)
    result = check_evalset(_write(tmp_path, rows))
    failed = _failed(result)
    assert set(failed) == {"expect_column_values_to_be_unique(id)",
                           "expect_column_values_to_be_unique(prompt or messages)",
                           "expect_column_value_lengths_to_be_between(reference)"}
    assert "lines [2, 6]" in failed["expect_column_values_to_be_unique(id)"]
    assert "lines [4, 8]" in failed["expect_column_values_to_be_unique(prompt or messages)"]
    assert "lines [10]" in failed["expect_column_value_lengths_to_be_between(reference)"]
    with pytest.raises(EvalSetHygieneError) as raised:
        require_clean([result])
    assert str(tmp_path / "set.jsonl") in str(raised.value) and "duplicates" in str(raised.value)


def test_schema_errors_name_the_column(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(60)]
    rows[0] = {k: v for k, v in _row(0).items() if k != "prompt"}        # no prompt nor messages
    rows[1] = _row(1, scorer="fuzzy")                                     # unknown scorer
    rows[2] = _row(2, category="poetry")                                  # undeclared category
    rows[3] = {k: v for k, v in _row(3).items() if k != "reference"}     # reference missing
    failed = _failed(check_evalset(_write(tmp_path, rows)))
    assert "lines [1]" in failed["expect_column_values_to_not_be_null(prompt or messages)"]
    assert "'fuzzy'" in failed["expect_column_values_to_be_in_set(scorer)"]
    assert "'poetry'" in failed["expect_column_values_to_be_in_set(category)"]
    assert "lines [4]" in failed["expect_column_values_to_not_be_null(reference)"]


def test_a_column_missing_everywhere_and_broken_lines(tmp_path: Path) -> None:
    rows: list[dict | str] = [{k: v for k, v in _row(i).items() if k != "scorer"} for i in range(60)]
    rows.append("{not json")
    failed = _failed(check_evalset(_write(tmp_path, rows)))
    assert "missing in every line" in failed["expect_column_to_exist(scorer)"]
    assert "line 61" in failed["valid_json_lines(None)"]


def test_structure_the_schema_cannot_see_is_checked_on_load(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(59)] + [{**_row(59), "prompt": None, "messages": [{"content": "hi"}]}]
    result = check_evalset(_write(tmp_path, rows))
    assert [c.check for c in result.errors] == ["load_evalset"]
    assert "messages" in result.errors[0].detail and ":60" in result.errors[0].detail


def test_prompt_text_reads_messages_or_prompt() -> None:
    assert prompt_text({"messages": [{"role": "user", "content": "hi"}]}) == "user: hi"
    assert prompt_text({"prompt": "hello"}) == "hello"
    assert prompt_text({"messages": [{"role": "user", "content": "  "}]}) is None
    assert prompt_text({"prompt": ""}) is None


def test_hygiene_job_exits_2_naming_the_file_and_check(tmp_path: Path) -> None:
    sets = tmp_path / "evalsets"
    sets.mkdir()
    _write(sets, [_row(i) for i in range(59)] + [_row(0)])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "LLMOPS_XCOM_DIR": str(tmp_path / "xcom")}
    done = subprocess.run([sys.executable, "-m", "llmops.jobs.drift_hygiene", "--evalsets-dir", str(sets)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "set.jsonl: expect_column_values_to_be_unique(id)" in done.stdout
    result = json.loads((tmp_path / "xcom" / "return.json").read_text())
    assert result["ok"] is False and result["evalsets"][0]["name"] == "tset"
    unknown = subprocess.run([sys.executable, "-m", "llmops.jobs.drift_hygiene", "--evalsets-dir", str(sets),
                              "--only", "nope"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "['nope'] not found" in unknown.stdout + unknown.stderr


def test_weekly_set_regenerates_byte_for_byte_and_shares_no_prompt_with_the_held_out_set(tmp_path: Path) -> None:
    from llmops.drift.make_evalset import main as make_evalset
    from llmops.evals.evalset import load_evalset

    out = tmp_path / "weekly.jsonl"
    assert make_evalset(["--out", str(out)]) == 0
    shipped = ROOT / "include" / "evalsets" / "tiny_chat_weekly_v1.jsonl"
    assert out.read_bytes() == shipped.read_bytes()
    weekly = load_evalset(shipped.with_suffix(".yaml"))
    held_out = load_evalset(ROOT / "include" / "evalsets" / "synthetic_chat_v1.yaml")
    prompts = {m["content"] for i in weekly.items for m in i.messages}
    assert prompts.isdisjoint({m["content"] for i in held_out.items for m in i.messages})
    assert {c: len(v) for c, v in weekly.by_category().items()} == {c: 50 for c in held_out.categories}


@pytest.mark.parametrize(("config_text", "data", "check", "words"), [
    ("name: tset\nfile: set.jsonl\ncategories: [arithmetic]\n", None, "config_fields", "'categories' must map"),
    ("name: tset\nfile: ../outside.jsonl\ncategories: {arithmetic: {}}\n", None, "file_exists", "outside"),
    ("name: tset\nfile: set.jsonl\ncategories: {arithmetic: {}}\n", b"\xff\xfe not utf-8\n", "valid_json_lines",
     "not UTF-8"),
    ("name: tset\nfile: set.jsonl\ncategories: {arithmetic: {}}\n", b'{"id": "' + b"x" * 70_000 + b'"}\n',
     "valid_json_lines", "EVALSET_LINE_MAX_BYTES"),
    ("name: [a\n", None, "readable_config", "cannot read the YAML"),
])
def test_hostile_eval_sets_fail_the_suite_by_name_and_never_crash(tmp_path: Path, config_text: str,
                                                                   data: bytes | None, check: str, words: str) -> None:
    """Hygiene never raises on bad data: each broken input is a failed check naming what to fix."""
    (tmp_path / "set.jsonl").write_bytes(data if data is not None else json.dumps(_row(1)).encode() + b"\n")
    config = tmp_path / "set.yaml"
    config.write_text(config_text)
    result = check_evalset(config)
    assert not result.ok
    [error] = result.errors
    assert error.check == check and words in error.detail, error.detail
