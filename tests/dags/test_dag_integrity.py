"""Every DAG imports cleanly and follows the house rules (Astronomer's template, extended)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.dag_parse import HEAVY, LAUNCHERS, Parse, parse_cold

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


@pytest.fixture(scope="module")
def cold_parses() -> dict[str, dict[str, Parse]]:
    """Each DAG file parsed in a fresh process (as the dag-processor does), under each launcher."""
    return parse_cold(DAG_FILES, LAUNCHERS)


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_import_no_heavy_modules(cold_parses, dag_file: Path, launcher: str) -> None:
    """Neither the DAG file nor the operators it builds import a heavy module at parse time:
    the kubernetes launcher's pod machinery (provider, client) included, boto3 too."""
    parse = cold_parses[launcher][dag_file.name]
    assert not parse.errors and parse.dags == 1, f"{dag_file.name} under {launcher}: {parse.errors}"
    assert parse.heavy_by_dag == [], (
        f"{dag_file.name} imports {parse.heavy_by_dag} at parse time with LLMOPS_LAUNCHER={launcher}; "
        f"import them inside tasks or at execute time ({', '.join(HEAVY)})")


def test_heavy_import_check_tells_the_dag_file_from_airflow(tmp_path: Path) -> None:
    """The check flags what a DAG file imports; what Airflow's provider discovery imports for an
    Asset URI (the Amazon provider's S3 normaliser imports boto3) is listed apart."""
    direct = tmp_path / "direct.py"
    direct.write_text("import boto3\nimport kubernetes.client\nfrom airflow.sdk import DAG\n"
                      "with DAG('direct', schedule=None):\n    pass\n")
    asset = tmp_path / "asset.py"
    asset.write_text("from airflow.sdk import DAG, Asset\n"
                     "with DAG('asset', schedule=[Asset(name='a', uri='s3://bucket/key')]):\n    pass\n")
    parses = parse_cold([direct, asset], ["local"])["local"]
    assert {"boto3", "botocore", "kubernetes"} <= set(parses["direct.py"].heavy_by_dag)
    assert parses["asset.py"].heavy_by_dag == []
    assert "boto3" in parses["asset.py"].heavy_by_airflow


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


def _unbounded(schema: dict, where: str) -> list[str]:
    """Paths in a Param's JSON schema where a user could type an unbounded value."""
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    problems = []
    if "string" in kinds and "enum" not in schema and "maxLength" not in schema:
        problems.append(f"{where}: a string with neither enum nor maxLength")
    if "array" in kinds:
        if "maxItems" not in schema:
            problems.append(f"{where}: an array without maxItems")
        problems += _unbounded(schema.get("items") or {}, f"{where}[]")
    if "object" in kinds:
        problems.append(f"{where}: a free-form object")
    return problems


def test_every_param_a_user_can_type_is_bounded(dagbag) -> None:
    """A trigger form's values end up in the metadata DB, pod specs and logs: each has a limit."""
    problems = []
    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            problems += _unbounded(dag.params.get_param(name).schema, f"{dag_id}.params.{name}")
    assert problems == [], "\n".join(problems)


def test_every_task_is_bounded(dagbag) -> None:
    """No task can hang forever holding a worker slot, a pool slot or a model's lease.

    Pod tasks allow at least their pod job's own deadline; an approval is bounded by its
    response timeout (the awaiting_input wait), which its Params shorten at run time.
    """
    from datetime import timedelta

    from airflow.providers.standard.operators.hitl import HITLOperator

    unbounded, too_short = [], []
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            if isinstance(task, HITLOperator) or getattr(task, "operator_class", None) is HITLOperator:
                if not task.response_timeout:
                    unbounded.append(f"{where} (approval without response_timeout)")
                continue
            timeout = task.execution_timeout
            if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
                unbounded.append(where)
                continue
            pod_job = getattr(task, "pod_job", None)
            if isinstance(pod_job, dict) and timeout.total_seconds() < pod_job.get("timeout_s", 0):
                too_short.append(f"{where}: {timeout} < the pod's deadline {pod_job['timeout_s']} s")
    assert unbounded == [], f"tasks without execution_timeout: {unbounded}"
    assert too_short == [], too_short
