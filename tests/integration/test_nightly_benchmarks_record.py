"""Recording and judging a night against a real MLflow server when one class's pod failed: the
other classes are recorded and judged, the failed class is named by the final check."""

from __future__ import annotations

import pytest

from tests.integration.test_nightly_benchmarks import fixture_result

pytestmark = [pytest.mark.integration]


def test_a_failed_class_is_reported_without_hiding_the_others(platform) -> None:
    import mlflow

    from llmops.benchmarks import config, nightly, recording

    bench = config.load()
    cpu = fixture_result("night1")
    # Its own model key: this run must not become history of the DAG test's default model.
    cpu["target"] = {**cpu["target"], "model_key": "path:tiny-chat/record-test"}
    targets = [
        {"hardware_class": "cpu", "role": "default", "model": "tiny-chat", "version": "default",
         "model_key": cpu["target"]["model_key"], "pod": "bench-cpu-default", "model_label": "tiny-chat@default"},
        # Planned, but its pod failed (OOM, image pull, ...): the mapped task returned nothing.
        {"hardware_class": "h100x1", "role": "champion", "model": "llama", "version": "3",
         "model_key": "sha256:" + "ab" * 32, "pod": "bench-h100x1-champion", "model_label": "llama@3"},
    ]
    report = nightly.record_and_judge(bench, targets=targets, results=[cpu, None], tracking_uri=platform.endpoints
                                      .mlflow_url, airflow_run_id="night-with-a-failed-class", trigger="scheduled")

    assert not report["passed"] and report["regressions"] == []
    assert report["failures"] == ["h100x1/llama@3: the benchmark pod failed (see its task log)"]
    assert {(r["hardware_class"], r["workload"]) for r in report["rows"]} == {
        ("cpu", "in32-out16-rateinf-c16"), ("cpu", "in64-out32-rate16-c16")}
    with pytest.raises(nightly.BenchmarkCheckFailed, match="h100x1/llama@3"):
        nightly.check(report)

    mlflow.set_tracking_uri(platform.endpoints.mlflow_url)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(recording.EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], "tags.airflow_run_id = 'night-with-a-failed-class'")
    kinds = sorted(r.data.tags["llmops.kind"] for r in runs)
    assert kinds == ["summary", "workload", "workload"]

    # A retried record task finds its runs instead of logging them twice.
    again = nightly.record_and_judge(bench, targets=targets, results=[cpu], tracking_uri=platform.endpoints
                                     .mlflow_url, airflow_run_id="night-with-a-failed-class", trigger="scheduled")
    assert again["summary_run_id"] == report["summary_run_id"]
    runs = client.search_runs([experiment.experiment_id], "tags.airflow_run_id = 'night-with-a-failed-class'")
    assert len(runs) == 3
