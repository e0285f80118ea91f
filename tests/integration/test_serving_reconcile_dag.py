"""serving_reconcile on the embedded platform: the live objects of the local store against the
pinned render of the version current.json serves; a hand edit fails the run naming the field,
reapply=true restores the render and the next run passes. S3 only: no model server runs."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "llmops-models"
IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "5e" * 32
DIGEST = "a" * 64
VLLM = "spec.template.spec.containers[vllm]"


def _promoted(platform, model: str):
    """A version staged (deployment.json beside its weights) and promoted: current.json names it and
    promote applied its render to the local store. Returns the store and the pinned objects."""
    from llmops.config import settings
    from llmops.core.deployment import DeploymentManifest
    from llmops.core.hardware import load_hardware_class
    from llmops.io import s3 as s3io
    from llmops.io.registry import ModelRegistry
    from llmops.refresh import actions
    from llmops.serving.objects import serving_objects
    from llmops.serving.render import render_route, render_serving

    conf = settings.load()
    hw = load_hardware_class(conf.default_hardware_class, conf.hardware_configs_dir)
    weights_uri = f"s3://{BUCKET}/models/{model}/sha256-{DIGEST}/"
    reg = ModelRegistry(platform.endpoints.mlflow_url)
    version, _ = reg.register(model, weights_uri, {"weight_digest": DIGEST, "runtime_image": IMAGE})
    manifest = DeploymentManifest(
        model_name=model, weight_digest=DIGEST, weights_uri=weights_uri, runtime_image=IMAGE,
        runtime_version="0.11.0", hardware_configs={hw.name: hw.config_hash}, tokenizer_hash="b" * 64,
        chat_template_hash="c" * 64, created_at=datetime.now(UTC).isoformat(), model_version=version.version)
    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    s3io.write_json(s3, BUCKET, f"models/{model}/sha256-{DIGEST}/deployment.json", manifest.to_dict())
    actions.promote(conf, model=model, version=version.version, run_id=f"promote-{version.version}",
                    tracking_uri=platform.endpoints.mlflow_url, models_bucket=BUCKET)
    objects = [*render_serving(manifest, hw, conf, role="stable"), render_route(model, conf, canary_percent=0)]
    return serving_objects(conf), objects


@pytest.fixture(scope="module")
def dag(airflow_db, platform):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / "serving_reconcile.py")).dags["serving_reconcile"]


def _run(dag, model: str, *, reapply: bool = False):
    # Every Param given: dag.test's run_conf lingers in the DAG object's params for its next run.
    run = dag.test(run_conf={"model": model, "reapply": reapply})
    [report] = next(ti for ti in run.get_task_instances() if ti.task_id == "reconcile").xcom_pull(
        task_ids="reconcile")
    return run, report


def _edit(store, kind: str, name: str, edit) -> None:
    path = store.path(kind, name)
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj, indent=2))


def _vllm(deployment: dict) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm")


def _set_flag(flag: str, value: str):
    def edit(deployment: dict) -> None:
        args = _vllm(deployment)["args"]
        args[args.index(flag) + 1] = value
    return edit


def test_reconcile_names_hand_edits_and_reapply_restores_the_render(dag, platform) -> None:
    model = f"recon-{uuid.uuid4().hex[:8]}"
    store, objects = _promoted(platform, model)
    stable = f"{model}-stable"

    run, report = _run(dag, model)
    assert run.state == "success", report
    assert report["status"] == "ok" and report["version"] == "1"

    other_image = IMAGE.replace("5e" * 32, "6f" * 32)
    pinned_args = _vllm(objects[0])["args"]
    pinned_len = pinned_args[pinned_args.index("--max-model-len") + 1]
    edits = [
        ("Deployment", stable, lambda d: _vllm(d).__setitem__("image", other_image),
         f"{VLLM}.image", IMAGE, other_image),
        ("Deployment", stable, _set_flag("--max-model-len", "4096"),
         f"{VLLM}.args --max-model-len", f"--max-model-len {pinned_len}", "--max-model-len 4096"),
        ("HTTPRoute", model, lambda r: r["spec"]["rules"][0]["backendRefs"][1].__setitem__("weight", 30),
         f"spec.rules[0].backendRefs[{model}-canary].weight", 0, 30),
    ]
    for kind, name, edit, field, expected, actual in edits:
        for obj in objects:  # each edit on its own, from the pinned render
            store.apply(obj)
        _edit(store, kind, name, edit)
        run, report = _run(dag, model)
        assert run.state == "failed", f"{field} edited by hand, yet the run passed"
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert states == {"reconcile": "success", "verdict": "failed"}, states
        assert report["status"] == "drifted"
        assert [(f["kind"], f["name"], f["field"], f["expected"], f["actual"]) for f in report["findings"]] == [
            (kind, name, field, expected, actual)]
        assert any(field in reason and "fix:" in reason for reason in report["reasons"])

    # All three at once, then repaired by reapply=true (which diffs again to prove it converged).
    _edit(store, "Deployment", stable, lambda d: _vllm(d).__setitem__("image", other_image))
    _edit(store, "Deployment", stable, _set_flag("--max-model-len", "4096"))
    run, report = _run(dag, model, reapply=True)
    assert run.state == "success", report
    assert report["drifts_before"] == 3 and report["status"] == "ok"
    assert report["applied"] == [f"Deployment/{stable}", f"Service/{stable}", f"HTTPRoute/{model}"]
    assert store.get("Deployment", stable) == objects[0]

    run, report = _run(dag, model)
    assert run.state == "success" and report["status"] == "ok"


def test_a_missing_object_and_a_model_never_promoted(dag, platform) -> None:
    model = f"recon-{uuid.uuid4().hex[:8]}"
    store, _ = _promoted(platform, model)
    store.path("Service", f"{model}-stable").unlink()
    run, report = _run(dag, model)
    assert run.state == "failed", report
    assert [(f["kind"], f["field"]) for f in report["findings"]] == [("Service", "(object)")]

    run, report = _run(dag, f"never-{uuid.uuid4().hex[:8]}")
    assert run.state == "failed" and report["status"] == "error"
    assert "current.json: no such object" in report["reasons"][0]
