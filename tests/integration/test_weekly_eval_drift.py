"""weekly_eval_drift on the embedded platform: Airflow's own runner, the local launcher, real vLLM
on the CPU, a real MLflow server and registry, a real S3 endpoint.

Two weekly runs of the same model: last week the ``good`` checkpoint was champion; then the
``degraded`` one (its ``reverse`` category broken) was promoted, so this week champion =
degraded and previous = good. This week's report must name ``reverse`` (and only it), and the
final check must fail after the report is written.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.conftest import run_job_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVALSET = "synthetic_chat_v1"


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "weekly_eval_drift.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["weekly_eval_drift"]


def _register(publish, checkpoint: Path, model: str, revision: str, models_bucket: str, tmp_path: Path) -> str:
    """Publish, receive and stage a checkpoint (the refresh pipeline's own jobs); return its version."""
    drop_uri = publish(checkpoint, model, revision)
    received = run_job_cli("receive", "--drop-uri", drop_uri, "--experiment", "llmops-drift-tests",
                    xcom=tmp_path / f"receive-{revision}")
    staged = run_job_cli("stage", "--drop-uri", drop_uri, "--registered-model", model, "--hardware-classes", "cpu",
                  "--experiment", "llmops-drift-tests", "--models-bucket", models_bucket,
                  "--source-etags", json.dumps(received["etags"]), xcom=tmp_path / f"stage-{revision}")
    return str(staged["model_version"])


@pytest.mark.vllm
def test_weekly_drift_names_the_category_a_promotion_broke(airflow_db, platform, models_dir, vllm_runtime, publish,
                                                           tmp_path: Path) -> None:
    import mlflow

    from llmops.drift.series import iso_week
    from llmops.io.registry import ModelRegistry

    model = f"drift-{uuid.uuid4().hex[:8]}"
    reg = ModelRegistry(platform.endpoints.mlflow_url)
    models_bucket = platform.settings_file.bucket("models")
    good = _register(publish, models_dir / "good", model, "r1", models_bucket, tmp_path)
    degraded = _register(publish, models_dir / "degraded", model, "r2", models_bucket, tmp_path)
    dag = _dag()
    conf = {"model": model, "evalsets": [EVALSET], "limit_per_category": 15, "weeks": 4}
    now = datetime.now(UTC).replace(microsecond=0)
    last_week_date = now - timedelta(days=7)

    # Last week: the good checkpoint serves; its weekly eval is the history this week compares with.
    reg.promote(model, good)
    last_week = dag.test(logical_date=last_week_date, run_conf=conf)
    assert last_week.state == "success", {ti.task_id: ti.state for ti in last_week.get_task_instances()}

    # Then the degraded checkpoint was promoted (champion = degraded, previous = good).
    reg.promote(model, degraded)
    this_week = dag.test(logical_date=now, run_conf=conf)
    states = {ti.task_id: ti.state for ti in this_week.get_task_instances()}
    assert this_week.state == "failed", states
    assert {t for t, s in states.items() if s == "failed"} == {"check_drift"}, states
    assert states["report"] == "success", "the report must be written before the check fails"

    mlflow.set_tracking_uri(platform.endpoints.mlflow_url)
    evals = mlflow.search_runs(experiment_names=["llmops-eval-drift"], output_format="list",
                               filter_string=f"tags.`llmops.stage` = 'weekly_eval' and tags.model = '{model}'")
    assert sorted((r.data.tags["week"], r.data.tags["alias"], r.data.tags["model_version"]) for r in evals) == sorted([
        (iso_week(last_week_date), "champion", good), (iso_week(now), "champion", degraded),
        (iso_week(now), "previous", good)])

    reports = mlflow.search_runs(experiment_names=["llmops-eval-drift"], output_format="list",
                                 filter_string=f"tags.`llmops.stage` = 'drift_report' and tags.model = '{model}'")
    by_week = {r.data.tags["week"]: r for r in reports}
    assert set(by_week) == {iso_week(last_week_date), iso_week(now)}
    assert by_week[iso_week(last_week_date)].data.tags["drift_detected"] == "false"
    report = by_week[iso_week(now)]
    assert report.data.tags["drift_detected"] == "true"
    assert report.data.tags["alert_categories"] == f"{EVALSET}/reverse"
    metrics = report.data.metrics
    assert metrics[f"drift/{EVALSET}/reverse/delta_week"] < -0.5
    assert metrics[f"drift/{EVALSET}/reverse/drifted"] == 1.0
    assert metrics[f"drift/{EVALSET}/reverse/vs_previous"] < -0.5
    for other in ("copy", "json"):
        assert metrics[f"drift/{EVALSET}/{other}/drifted"] == 0.0, other

    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=report.info.run_id, artifact_path="drift",
                                                         dst_path=str(tmp_path / "report")))
    summary = (artifacts / "summary.md").read_text()
    drifted_section = summary.split("## What drifted", 1)[1].split("\n## ", 1)[0]
    assert f"{EVALSET}/reverse" in drifted_section and "copy" not in drifted_section
    assert "Newly failing since" in summary
    page = (artifacts / "report.html").read_text()
    assert "DRIFT ALERT" in page and "<svg" in page and "reverse (drift)" in page

    from tests.unit.test_drift_report import screenshot_in_chromium

    shot = screenshot_in_chromium(artifacts / "report.html", ROOT / "test-artifacts" / "weekly_eval_drift_report.png")
    print(f"report screenshot: {shot}")


@pytest.mark.parametrize("registered", [False, True], ids=["unknown-model", "no-champion"])
def test_no_champion_fails_clearly_naming_the_fix(platform, registered: bool) -> None:
    from llmops.drift import plan as drift_plan
    from llmops.io.registry import ModelRegistry

    model = f"drift-none-{uuid.uuid4().hex[:8]}"
    reg = ModelRegistry(platform.endpoints.mlflow_url)
    if registered:  # a version exists, but nothing was ever promoted
        reg.register(model, f"s3://llmops-models/models/{model}/sha256-{'e' * 64}/", {"weight_digest": "e" * 64})
    with pytest.raises(drift_plan.NoChampion) as raised:
        drift_plan.targets(reg, model, platform.endpoints.mlflow_url)
    message = str(raised.value)
    assert f"model {model!r} has no 'champion' alias" in message
    assert "model_refresh" in message and "make run" in message


def test_history_reads_qualification_baselines_from_the_refresh_experiment(platform, tmp_path: Path) -> None:
    """The baseline query against a real MLflow server: the version's own qualify run as the candidate,
    same hardware class first; runs of other roles, versions or eval sets never count."""
    import mlflow

    from llmops.drift.history import DriftHistory
    from llmops.evals.stats import ScoreEstimate
    from llmops.io import tracking

    model = f"drift-base-{uuid.uuid4().hex[:8]}"
    experiment = f"llmops-refresh-{model}"
    experiment_id = tracking.configure(platform.endpoints.mlflow_url, experiment)

    def qualify_run(version: str, role: str, hardware_class: str, evalset: str, score: float) -> str:
        rows = [{"id": f"reverse-{i}", "category": "reverse", "reference": "x", "prediction": "x" if score else "y",
                 "score": score, "latency_s": 0.1, "error": None} for i in range(3)]
        results = tmp_path / f"{version}-{role}-{hardware_class}-{evalset}" / "eval_results.json"
        results.parent.mkdir()
        results.write_text(json.dumps(rows))
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.set_tags({"llmops.stage": "qualify", "model": model, "model_version": version, "role": role,
                             "hardware_class": hardware_class, "evalset": evalset, "evalset_revision": "rev1"})
            mlflow.log_metrics(tracking.eval_metrics({"reverse": ScoreEstimate(score, score, score, 3)}))
            mlflow.log_artifact(str(results), artifact_path="eval")
        return run.info.run_id

    wanted = qualify_run("2", "candidate", "cpu", "synthetic_chat_v1", 1.0)
    qualify_run("2", "candidate", "h100x1", "synthetic_chat_v1", 0.0)   # another class
    qualify_run("2", "champion", "cpu", "synthetic_chat_v1", 0.0)       # re-evaluated as the champion later
    qualify_run("3", "candidate", "cpu", "synthetic_chat_v1", 0.0)      # another version
    other_set = qualify_run("2", "candidate", "cpu", "tiny_chat_weekly_v1", 0.0)

    store = DriftHistory(platform.endpoints.mlflow_url, qualify_experiment=experiment)
    found = store.qualification_baseline(model, "2", "synthetic_chat_v1", "cpu", {"reverse-0": "Reverse: x"})
    assert found is not None and found.run_id == wanted and found.alias == "qualify"
    assert found.scores["reverse"].mean == 1.0 and found.item_scores("reverse") == {f"reverse-{i}": 1.0
                                                                                     for i in range(3)}
    assert found.items[0].prompt == "Reverse: x"
    on_gpu_class = store.qualification_baseline(model, "2", "tiny_chat_weekly_v1", "h200x1")
    assert on_gpu_class is not None and on_gpu_class.run_id == other_set  # no run on that class: any class
    assert store.qualification_baseline(model, "9", "synthetic_chat_v1", "cpu") is None
    assert DriftHistory(platform.endpoints.mlflow_url, experiment="no-such-experiment").weekly_runs(model) == []
