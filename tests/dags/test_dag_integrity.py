"""Every DAG imports cleanly and follows the house rules (Astronomer's template, extended)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.dag_parse import HEAVY, measure

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(DAGS_DIR.glob("*.py"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}, "\n".join(f"{f}: {e}" for f, e in dagbag.import_errors.items())
    assert dagbag.dags, "no DAG was found"


def test_every_dag_file_defines_exactly_one_dag(dagbag) -> None:
    per_file: dict[str, list[str]] = {}
    for dag in dagbag.dags.values():
        per_file.setdefault(Path(dag.fileloc).name, []).append(dag.dag_id)
    assert {f.name for f in DAG_FILES} == set(per_file), "a DAG file defines no DAG"
    assert all(len(ids) == 1 for ids in per_file.values()), per_file


def test_dags_are_tagged_documented_and_owned(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert "llmops" in dag.tags, f"{dag_id}: tags {dag.tags} lack 'llmops'"
        assert len(dag.tags) >= 2, f"{dag_id}: add a tag naming the pipeline"
        assert dag.doc_md and len(dag.doc_md.strip()) > 80, f"{dag_id}: doc_md missing or too short"
        assert dag.description, f"{dag_id}: description missing"
        assert dag.catchup is False, f"{dag_id}: catchup must be off (no backfill storms)"
        for task in dag.tasks:
            assert task.owner == "llmops", f"{dag_id}.{task.task_id}: owner {task.owner!r}"
            assert task.retries >= 2, f"{dag_id}.{task.task_id}: retries {task.retries} < 2"


def test_ui_params_are_typed(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        for name, _param in dag.params.items():
            schema = dag.params.get_param(name).schema
            assert "type" in schema, f"{dag_id}: param {name!r} has no JSON-schema type"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_import_no_heavy_modules(dag_file: Path) -> None:
    _, heavy = measure(dag_file, repeat=1)
    assert heavy == [], f"{dag_file.name} imports {heavy} at parse time; import them inside tasks ({HEAVY})"


def test_corpus_changes_are_followed_by_an_eval_run(dagbag) -> None:
    """The corpus asset corpus_reingest emits schedules weekly_eval_drift, beside its weekly cron."""
    from airflow.sdk import AssetOrTimeSchedule

    from llmops.corpus.assets import CORPUS_ASSET

    producer = dagbag.dags["corpus_reingest"]
    assert any(CORPUS_ASSET in task.outlets for task in producer.tasks), "corpus_reingest must emit the corpus asset"
    schedule = dagbag.dags["weekly_eval_drift"].timetable
    assert isinstance(schedule, AssetOrTimeSchedule)
    assert schedule.asset_condition == CORPUS_ASSET
    assert (schedule.timetable.expression, schedule.timetable.timezone) == ("0 6 * * 1", "UTC")
