"""current.json's history: a replayed action (a retried task) adds nothing; rollbacks converge."""

from __future__ import annotations

import pytest

from llmops.refresh.deploy_history import history_key, next_current, rollback_plan


def _record(version: str, run: str, action: str = "promote", at: str = "t") -> dict:
    return {"model": "m", "version": version, "airflow_run_id": run, "action": action, "at": at}


def test_a_new_action_pushes_the_serving_deployment_into_history() -> None:
    first = next_current(None, _record("1", "r1", at="t1"))
    second = next_current(first, _record("2", "r2", at="t2"))
    assert second["version"] == "2" and [h["version"] for h in second["history"]] == ["1"]
    assert "history" not in second["history"][0]


def test_a_replayed_action_keeps_the_document_and_its_history_key() -> None:
    first = next_current(next_current(None, _record("1", "r1", at="t1")), _record("2", "r2", at="t2"))
    replay = next_current(first, _record("2", "r2", at="t3-later"))
    assert replay == first
    assert history_key("m", replay) == history_key("m", first) == "deployments/m/history/t2-promote.json"


def test_the_same_run_doing_another_action_is_not_a_replay() -> None:
    first = next_current(None, _record("1", "r1", at="t1"))
    other = next_current(first, _record("1", "r1", action="rollback", at="t2"))
    assert [h["action"] for h in other["history"]] == ["promote"]


def test_rollback_converges_on_the_recorded_decision() -> None:
    decided = rollback_plan(None, champion="3", previous="2", run_id="r")
    assert decided == {"champion": "2", "previous": "3", "rolled_back": "3"}
    intent = {"airflow_run_id": "r", "champion": "2", "previous": "3"}
    # After a half-done first attempt the registry says champion=2, previous=2: the intent decides.
    assert rollback_plan(intent, champion="2", previous="2", run_id="r") == decided
    with pytest.raises(ValueError, match="belongs to run"):
        rollback_plan(intent, "2", "3", run_id="another")
    with pytest.raises(LookupError, match="previous"):
        rollback_plan(None, champion="3", previous=None, run_id="r")
