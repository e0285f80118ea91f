"""The deployment history of ``deployments/<model>/current.json``: pure, so a retry is provably safe.

``current.json`` holds the deployment now serving plus every earlier one, newest first. A
promote or rollback task may run twice for the same Airflow run (a retry after the write
went through but the task died, a worker lost mid-task): the second write must leave the
document exactly as the first one did, not push a copy of itself into the history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def same_action(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """True when ``a`` and ``b`` record the same action of the same Airflow run."""
    return bool(a) and all(a.get(k) == b.get(k) for k in ("airflow_run_id", "action", "model"))


def next_current(previous: Mapping[str, Any] | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """The new ``current.json`` after ``record``, given the one in place (or ``None``).

    When ``previous`` already records this run's action (a replay), its history and its
    timestamp are kept, so the document and the per-action history object's key are the
    same as the first write's: a retry adds nothing.
    """
    if previous is not None and same_action(previous, record):
        return {**record, "at": previous.get("at", record.get("at")), "history": list(previous.get("history", []))}
    history = [] if previous is None else [{k: v for k, v in previous.items() if k != "history"},
                                           *previous.get("history", [])]
    return {**record, "history": history}


def history_key(model: str, record: Mapping[str, Any]) -> str:
    """The history object of one action: keyed by its time and action, stable across replays."""
    return f"deployments/{model}/history/{record['at']}-{record['action']}.json"


def rollback_plan(intent: Mapping[str, Any] | None, champion: str | None, previous: str | None,
                  run_id: str) -> dict[str, str]:
    """What a rollback run sets: ``{"champion": ..., "previous": ...}`` (plus ``rolled_back``).

    The first attempt decides from the registry (champion goes back to previous) and that
    decision is written down before any alias moves (``intent``); every retry of the same run
    converges on the recorded decision instead of rolling back a second time, even if the
    first attempt died between its two alias moves.
    """
    if intent is not None:
        if intent.get("airflow_run_id") != run_id:
            raise ValueError(f"rollback intent belongs to run {intent.get('airflow_run_id')!r}, not {run_id!r}")
        return {"champion": intent["champion"], "previous": intent["previous"], "rolled_back": intent["previous"]}
    if previous is None:
        raise LookupError("no 'previous' alias: nothing to roll back to")
    if champion is None:
        raise LookupError("no 'champion' alias: nothing to roll back")
    return {"champion": previous, "previous": champion, "rolled_back": champion}
