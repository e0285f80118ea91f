"""corpus_reingest end to end on the embedded platform: Airflow's runner, the local launcher,
the real S3 endpoint and MLflow server, real parsers, Great Expectations and the offline embedder.

One clean run publishes and emits the corpus asset; then a parser upgrade (v2, which emits the
undeclared content type ``chart``) fails loudly, publishes nothing and loses nothing.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "llmops-corpus"


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "corpus_reingest.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["corpus_reingest"]


def _task_result(run, task_id: str):
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id).one()
        return ti.state, ti.xcom_pull(task_ids=task_id, key="return_value", session=session)


def _asset_events(uri: str) -> list:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return [(e.source_run_id, dict(e.extra or {})) for e in
                session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.uri == uri).all()]


def test_clean_run_publishes_then_parser_upgrade_fails_loudly_and_loses_nothing(airflow_db, platform) -> None:
    import mlflow

    from llmops.corpus import fixture, ingest
    from llmops.corpus.assets import CORPUS_ASSET
    from llmops.io import s3 as s3io

    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    source = f"s3://{BUCKET}/sources/test-{uuid.uuid4().hex[:8]}/"
    fixture.upload_fixture(s3, BUCKET, source.split("/", 3)[3])
    dag = _dag()

    # --- clean run: v1 parser, every format, one unreadable PDF ---------------------------------
    clean = dag.test(run_conf={"source_prefix": source, "parser_version": "v1", "docs_per_shard": 3})
    assert clean.state == "success", f"clean run ended {clean.state}"
    _, validation = _task_result(clean, "validate")
    assert validation["status"] == "passed", validation["message"]
    assert validation["rejected_documents"].keys() == {"papers/broken.pdf"}
    assert "pdf parser failed" in validation["rejected_documents"]["papers/broken.pdf"]
    assert validation["parity"]["ok"] and validation["parity"]["documents"] == 6
    assert validation["parity"]["chunked"] == 5 and validation["parity"]["rejected"] == 1
    _, published = _task_result(clean, "publish")
    assert published["status"] == "published" and published["vectors"] == published["chunks"] > 0

    pointer = s3io.read_json(s3, BUCKET, "corpus/main/current.json")
    assert pointer["snapshot_id"] == published["snapshot_id"] == validation["snapshot_id"]
    assert pointer["parser_version"] == "v1" and set(pointer["counts"]) == {
        "code", "heading", "list_item", "paragraph", "table"}
    manifest = s3io.read_json(s3, BUCKET, pointer["manifest_uri"].split("/", 3)[3])
    assert sum(p["rows"] for p in manifest["parts"]) == manifest["chunks"] == pointer["chunks"]
    index = s3io.read_json(s3, BUCKET, pointer["index"]["uri"].split("/", 3)[3] + "index.json")
    assert index["vectors"] == manifest["chunks"] and index["dim"] == 256
    # The asset event that lets an eval run follow the corpus change.
    events = [extra for run_id, extra in _asset_events(CORPUS_ASSET.uri) if run_id == clean.run_id]
    assert events and events[0]["snapshot_id"] == pointer["snapshot_id"]

    mlflow.set_tracking_uri(platform.endpoints.mlflow_url)
    recorded = mlflow.get_run(validation["mlflow_run_id"])
    assert recorded.data.tags["verdict"] == "passed"
    assert recorded.data.metrics["chunks/paragraph"] == pointer["counts"]["paragraph"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(recorded.info.run_id, "data_docs")}
    assert "data_docs/index.html" in artifacts

    # A re-publish of the same snapshot changes nothing (no second asset event from it).
    again = ingest.publish_run(s3, BUCKET, "main", clean.run_id, embedder=None, store_factory=None, force=False,
                               scratch=ingest.scratch_dir())
    assert again["status"] == "unchanged"

    # --- parser upgrade: v2 emits 'chart', not in the taxonomy ----------------------------------
    upgrade = dag.test(run_conf={"source_prefix": source, "parser_version": "v2", "docs_per_shard": 3})
    assert upgrade.state == "failed"
    verdict_state, _ = _task_result(upgrade, "check_verdict")
    publish_state, _ = _task_result(upgrade, "publish")
    assert verdict_state == "failed" and publish_state in ("upstream_failed", None)
    _, rejected = _task_result(upgrade, "validate")
    assert rejected["status"] == "rejected"
    assert "new content types not in the taxonomy: chart (2 chunks)" in rejected["message"]
    assert rejected["new_types"]["chart"]["count"] == 2 and rejected["new_types"]["chart"]["examples"]
    assert rejected["parity"]["ok"]  # nothing lost: the broken PDF is still listed, every other doc chunked

    # Nothing published: the live snapshot is the clean one; the failing rows and report are quarantined.
    assert s3io.read_json(s3, BUCKET, "corpus/main/current.json")["snapshot_id"] == pointer["snapshot_id"]
    quarantine = rejected["quarantine_uri"].split("/", 3)[3]
    report = s3io.read_json(s3, BUCKET, quarantine + "report.json")
    assert report["verdict"]["new_types"]["chart"]["count"] == 2
    assert report["quarantine"]["failing_rows"] == 2
    import io

    import pyarrow.parquet as pq

    body = s3.get_object(Bucket=BUCKET, Key=quarantine + "failing-rows.parquet")["Body"].read()
    assert set(pq.read_table(io.BytesIO(body)).column("content_type").to_pylist()) == {"chart"}
    assert not [run_id for run_id, _ in _asset_events(CORPUS_ASSET.uri) if run_id == upgrade.run_id]
    assert mlflow.get_run(rejected["mlflow_run_id"]).data.tags["new_types"] == "chart"


def test_parser_watch_announces_a_new_parser_version_once(airflow_db, platform, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from llmops.corpus import ingest
    from llmops.corpus.assets import PARSER_CONFIG_ASSET
    from llmops.io import s3 as s3io

    pointer, _ = ingest.read_pointer(s3io.client(endpoint_url=platform.endpoints.s3_url), BUCKET, "main")
    live = (pointer or {}).get("parser_version")
    active = "v2" if live != "v2" else "v1"
    monkeypatch.setenv("AIRFLOW_VAR_LLMOPS_CORPUS_PARSER_VERSION", active)
    dag = DagBag(dag_folder=str(ROOT / "dags" / "corpus_parser_watch.py")).dags["corpus_parser_watch"]

    first = dag.test()
    assert first.state == "success"
    assert _task_result(first, "announce_parser_change")[0] == "success"
    events = [extra for run_id, extra in _asset_events(PARSER_CONFIG_ASSET.uri) if run_id == first.run_id]
    assert events == [{"parser_version": active}]

    second = dag.test()  # same active version, already announced: no second re-ingestion
    assert _task_result(second, "announce_parser_change")[0] == "skipped"
    assert not [r for r, _ in _asset_events(PARSER_CONFIG_ASSET.uri) if r == second.run_id]

    if live is not None:  # (run after the re-ingestion test, the live snapshot has a parser version)
        monkeypatch.setenv("AIRFLOW_VAR_LLMOPS_CORPUS_PARSER_VERSION", live)
        same = dag.test()  # the active version is the live one: nothing to announce
        assert _task_result(same, "announce_parser_change")[0] == "skipped"


def test_parser_watch_that_dies_before_emitting_announces_on_its_next_run(airflow_db, platform, monkeypatch) -> None:
    """The announcement is the asset event itself: a watcher run that fails before emitting it
    leaves the version unannounced, so the next run announces it (once)."""
    import airflow.sdk
    from airflow.dag_processing.dagbag import DagBag

    from llmops.corpus.assets import PARSER_CONFIG_ASSET

    version = f"never-live-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr("llmops.corpus.config.load_parser_config", lambda name: None)
    monkeypatch.setenv("AIRFLOW_VAR_LLMOPS_CORPUS_PARSER_VERSION", version)
    dag = DagBag(dag_folder=str(ROOT / "dags" / "corpus_parser_watch.py")).dags["corpus_parser_watch"]

    def dies(*_args, **_kwargs):
        raise RuntimeError("worker lost before the event was emitted")

    with monkeypatch.context() as patched:
        patched.setattr(airflow.sdk, "Metadata", dies)
        patched.setattr(dag.get_task("announce_parser_change"), "retries", 0)  # the crash, not the retries
        crashed = dag.test()
    assert _task_result(crashed, "announce_parser_change")[0] == "failed"
    assert not [r for r, _ in _asset_events(PARSER_CONFIG_ASSET.uri) if r == crashed.run_id]

    retried = dag.test()
    assert _task_result(retried, "announce_parser_change")[0] == "success"
    events = [extra for r, extra in _asset_events(PARSER_CONFIG_ASSET.uri) if r == retried.run_id]
    assert events == [{"parser_version": version}]
    assert _task_result(dag.test(), "announce_parser_change")[0] == "skipped", "announced once, not twice"


def test_an_empty_source_prefix_fails_at_once_naming_the_prefix(airflow_db, platform) -> None:
    """Nothing to ingest is a verdict: the run fails on its first try, before any parse pod."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    source = f"s3://{BUCKET}/sources/empty-{uuid.uuid4().hex[:8]}/"
    run = _dag().test(run_conf={"source_prefix": source, "parser_version": "v1"})
    assert run.state == "failed"
    with create_session() as session:
        tis = {ti.task_id: ti for ti in session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id)}
        states = {task: ti.state for task, ti in tis.items()}
        assert states["plan"] == "success"
        assert states["plan_parse"] == "failed" and tis["plan_parse"].try_number == 1, "no retry of a verdict"
        assert states["publish"] == "upstream_failed"
    _, planned = _task_result(run, "plan")
    assert planned["documents"] == 0
