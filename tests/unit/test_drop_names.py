"""One naming rule for drop path segments, shared by publish and the watcher."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmops.refresh.drop_names import MODEL_PATTERN, drop_name_problem, model_problem, revision_problem

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("model", ["tiny-chat", "m", "0model", "a" * 63, "llama-3-8b"])
def test_conforming_models_pass(model: str) -> None:
    assert model_problem(model) is None


@pytest.mark.parametrize("model", ["Tiny-Chat", "tiny_chat", "-tiny", "a" * 64, "", "tiny.chat", "_claims",
                                   "quarantine", "tiny chat", "ünï"])
def test_odd_models_are_refused_naming_the_rule_and_a_fix(model: str) -> None:
    problem = model_problem(model)
    assert problem is not None and problem.segment == "model" and problem.value == model
    assert problem.fix and problem.rule
    suggestion = re.search(r"'([^']*)'", problem.fix)
    if suggestion:  # the suggested name itself conforms
        assert model_problem(suggestion.group(1)) is None


@pytest.mark.parametrize("revision", ["r1", "r10", "9f2c1e0", "2026-11-23", "v1.2.3", "R_1", "a" * 128])
def test_conforming_revisions_pass(revision: str) -> None:
    assert revision_problem(revision) is None


@pytest.mark.parametrize("revision", ["", ".hidden", "r1..r2", "..", "a/b", "r 1", "a" * 129, "-r1", "r1:2"])
def test_odd_revisions_are_refused(revision: str) -> None:
    problem = revision_problem(revision)
    assert problem is not None and problem.segment == "revision"
    suggestion = re.search(r"'([^']*)'", problem.fix)
    assert suggestion and revision_problem(suggestion.group(1)) is None


def test_drop_name_problem_reports_the_model_first() -> None:
    assert drop_name_problem("Bad", "..").segment == "model"
    assert drop_name_problem("good", "..").segment == "revision"
    assert drop_name_problem("good", "r1") is None


def test_the_model_rule_is_the_model_refresh_param_pattern() -> None:
    """A name publish accepts is a name model_refresh accepts as its `model` param."""
    assert f'pattern="{MODEL_PATTERN}"' in (ROOT / "dags" / "model_refresh.py").read_text()
