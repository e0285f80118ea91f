"""Every pod-job task of every DAG renders to a valid Kubernetes pod, and both launchers
run the very same pod job (the pod spec is the source of truth in both modes).

Pods are validated against the schema of the oldest Kubernetes the project supports
(``KUBERNETES_MIN_VERSION``) and of the newest the validator ships, with the
``kubernetes_default`` connection of ``airflow_settings.yaml``: the XCom sidecar the provider
adds to each pod is then the pinned, memory-limited one the launcher requires.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest

from llmops.config.kubernetes import KUBERNETES_CONN_ID, KUBERNETES_MIN_VERSION
from llmops.launch.pod_policy import XCOM_SIDECAR_CONTAINER, refuse_unsafe_xcom_sidecar

ROOT = Path(__file__).resolve().parents[2]
VLLM_IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "c3" * 32
JOBS_IMAGE = "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "d4" * 32
RESTRICTED = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
SCHEMA_VERSIONS = (KUBERNETES_MIN_VERSION, kubernetes_validate.latest_version())


def _kubernetes_connection() -> dict:
    """The ``kubernetes_default`` connection as ``airflow_settings.yaml`` declares it (Airflow's JSON form)."""
    from llmops.embedded.airflow_settings import AirflowSettingsFile

    env = AirflowSettingsFile.load(ROOT / "airflow_settings.yaml").env()
    return json.loads(env[f"AIRFLOW_CONN_{KUBERNETES_CONN_ID.upper()}"])


@pytest.fixture(autouse=True)
def kubernetes_connection(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The provider reads the XCom sidecar's image and resources from this connection."""
    connection = _kubernetes_connection()
    monkeypatch.setenv(f"AIRFLOW_CONN_{KUBERNETES_CONN_ID.upper()}", json.dumps(connection))
    return connection


def _validate(manifest: dict, where: str) -> None:
    for version in SCHEMA_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: invalid on Kubernetes {version}: {exc}") from exc


def _check_xcom_sidecar(manifest: dict, connection: dict, where: str) -> None:
    """The provider's XCom sidecar is the connection's: pinned image, memory limit."""
    sidecar = next((c for c in manifest["spec"]["containers"] if c["name"] == XCOM_SIDECAR_CONTAINER), None)
    assert sidecar is not None, f"{where}: no {XCOM_SIDECAR_CONTAINER} (XCom push is on for pod jobs)"
    assert sidecar["image"] == connection["extra"]["xcom_sidecar_container_image"], where
    assert sidecar["resources"] == json.loads(connection["extra"]["xcom_sidecar_container_resources"]), where
    assert sidecar["resources"]["limits"]["memory"], where
    refuse_unsafe_xcom_sidecar(manifest)  # what the launcher checks before it creates the pod


def _dagbag(monkeypatch: pytest.MonkeyPatch, launcher: str, hardware_class: str = "cpu"):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("LLMOPS_LAUNCHER", launcher)
    monkeypatch.setenv("LLMOPS_VLLM_IMAGE", VLLM_IMAGE)
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    monkeypatch.setenv("LLMOPS_DEFAULT_HARDWARE_CLASS", hardware_class)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


def _pod_tasks(bag, operator_name: str):
    return [(dag, task) for dag in bag.dags.values() for task in dag.tasks
            if type(task).__name__ == operator_name]


class _FakeTaskInstance:
    """What templates (upstream results) and the pod's task-instance labels read from ``ti``."""

    dag_id = "model_refresh"
    task_id = "stage"
    run_id = "manual__2026-11-23T00:00:00+00:00"
    map_index = -1
    try_number = 1

    @staticmethod
    def xcom_pull(task_ids: str | None = None, key: str = "return_value") -> dict:
        return {"etags": {"model.safetensors": "0123abcd"}, "runtime": {"vllm_version": "0.32.0"}}


def _context(dag) -> dict:
    params = {name: dag.params[name] for name in dag.params}
    return {"params": params, "run_id": "manual__2026-11-23T00:00:00+00:00", "ds": "2026-11-23",
            "dag": dag, "ti": _FakeTaskInstance(), "task_instance": _FakeTaskInstance(),
            "var": {"value": {"llmops_bucket_models": "llmops-models", "llmops_bucket_corpus": "llmops-corpus"}},
            "conn": {"llmops_mlflow": SimpleNamespace(host="http://mlflow.llmops.svc:5000"),
                     "llmops_s3": SimpleNamespace(extra_dejson={"endpoint_url": ""})}}


@pytest.mark.parametrize("hardware_class", ["cpu", "h100x1", "b200x4"])
def test_every_pod_job_task_renders_a_valid_restricted_pod(monkeypatch, kubernetes_connection,
                                                          hardware_class: str) -> None:
    from llmops.launch.kubernetes import render_pod_manifest

    monkeypatch.setenv("LLMOPS_REFRESH_HARDWARE_CLASSES", hardware_class)
    tasks = _pod_tasks(_dagbag(monkeypatch, "kubernetes", hardware_class), "PodJobKubernetesOperator")
    assert tasks, "expected pod-job tasks under the kubernetes launcher"
    for dag, task in tasks:
        manifest = render_pod_manifest(task, _context(dag))
        where = f"{dag.dag_id}.{task.task_id} on {hardware_class}"
        _validate(manifest, where)
        _check_xcom_sidecar(manifest, kubernetes_connection, where)
        assert "{{" not in json.dumps(manifest), f"{where}: unrendered template"
        if task.task_id == "stage":
            base = manifest["spec"]["containers"][0]
            assert base["args"][base["args"].index("--source-etags") + 1] == '{"model.safetensors": "0123abcd"}'

        spec = manifest["spec"]
        containers = spec["containers"] + spec.get("initContainers", [])
        for container in containers:  # the provider's XCom sidecar too
            for key, value in RESTRICTED.items():
                assert container["securityContext"][key] == value, f"{where}: {container['name']} {key}"
        vllm = next((c for c in spec.get("initContainers", []) if c["name"] == "vllm"), None)
        if vllm is not None:
            _check_serving_pod(spec, vllm, hardware_class, where)


def _check_serving_pod(spec: dict, vllm: dict, hardware_class: str, where: str) -> None:
    assert vllm["restartPolicy"] == "Always", f"{where}: vLLM must be a native sidecar"
    assert vllm["startupProbe"]["httpGet"]["path"] == "/health"
    gpus = int(vllm["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
    if hardware_class == "cpu":
        assert gpus == 0 and not spec.get("tolerations")
    else:
        assert gpus == int(hardware_class[-1]), f"{where}: GPU limit {gpus}"
        assert vllm["resources"]["requests"]["nvidia.com/gpu"] == vllm["resources"]["limits"]["nvidia.com/gpu"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert "nvidia.com/gpu.product" in spec["nodeSelector"]
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_gateway_canary_controller_pod_is_valid(monkeypatch, kubernetes_connection) -> None:
    """In a cluster the canary is the controller alone (the servers are Deployments): a small
    CPU pod whose arguments the canary job accepts."""
    from airflow.sdk import DAG

    from llmops.canary.plan import canary_controller_job
    from llmops.config import settings
    from llmops.core.hardware import load_hardware_class
    from llmops.jobs import canary as canary_job
    from llmops.launch.kubernetes import make_kubernetes_task, render_pod_manifest
    from llmops.serving.deployments import ServingRoute

    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    monkeypatch.setenv("LLMOPS_LAUNCHER", "kubernetes")
    conf = settings.load()
    hw = load_hardware_class("h100x1", conf.hardware_configs_dir)
    job = canary_controller_job(conf, hw, route_args=ServingRoute.for_model(conf, "chat").controller_args(),
                                served_model_name="chat", spec={"steps": [{"weight": 5, "window_s": 60}]},
                                model_stable="chat@1", model_canary="chat@2",
                                mlflow_tracking_uri="http://mlflow.llmops.svc:5000")
    with DAG(dag_id="gateway_canary", schedule=None):
        task = make_kubernetes_task(job, task_id="canary")
    manifest = render_pod_manifest(task, {"params": {}})
    _validate(manifest, "gateway canary")
    _check_xcom_sidecar(manifest, kubernetes_connection, "gateway canary")
    assert not manifest["spec"].get("initContainers")  # no vLLM sidecar: the servers are Deployments
    assert manifest["spec"]["automountServiceAccountToken"] is True  # it patches the HTTPRoute
    main = manifest["spec"]["containers"][0]  # the KPO names it "base"; the XCom sidecar follows
    assert "nvidia.com/gpu" not in main.get("resources", {}).get("limits", {})
    assert canary_job.parse_args(main["args"]).router == "gateway"


@pytest.mark.parametrize("hardware_class", ["cpu", "h100x2", "b200x4"])
def test_qualification_pods_planned_at_run_time_are_valid(monkeypatch, kubernetes_connection,
                                                         hardware_class: str) -> None:
    """Qualify tasks are mapped over pod jobs planned at run time: render what the planner builds."""
    from airflow.sdk import DAG

    from llmops.config import settings
    from llmops.core.hardware import load_hardware_class
    from llmops.core.podjob import PodJob
    from llmops.launch.kubernetes import make_kubernetes_task, render_pod_manifest
    from llmops.refresh import plan

    monkeypatch.setenv("LLMOPS_VLLM_IMAGE", VLLM_IMAGE)
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    conf = settings.load()
    hw = load_hardware_class(hardware_class, conf.hardware_configs_dir)
    digest = "ab" * 32
    # Each target is served by the runtime it is pinned to (refresh/plan.py).
    targets = [{"role": "candidate", "version": "2", "weights_uri": f"s3://m/models/x/sha256-{digest}/",
                "weight_digest": digest, "runtime_image": VLLM_IMAGE},
               {"role": "champion", "version": "1", "weights_uri": "s3://m/models/x/sha256-cd/", "weight_digest": "cd",
                "runtime_image": VLLM_IMAGE}]
    jobs = plan.qualification_jobs(conf, hw, model="x", targets=targets, evalset_config="e.yaml",
                                      s3_endpoint=None, tracking_uri="http://mlflow:5000")
    assert [j["name"] for j in jobs] == [f"qualify-candidate-{hardware_class}", f"qualify-champion-{hardware_class}"]
    with DAG(dag_id=f"plan_{hardware_class}", schedule=None):
        task = make_kubernetes_task(PodJob.from_dict(jobs[0]), task_id="qualify")
    manifest = render_pod_manifest(task, {"params": {}})
    _validate(manifest, f"qualify on {hardware_class}")
    _check_xcom_sidecar(manifest, kubernetes_connection, "qualify")
    spec = manifest["spec"]
    fetch, vllm = spec["initContainers"]
    assert fetch["name"] == "fetch-weights" and "restartPolicy" not in fetch
    assert fetch["args"][fetch["args"].index("--weight-digest") + 1] == digest
    assert {e["name"] for e in fetch["env"] if "valueFrom" in e} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert vllm["args"][0] == f"/models/x/sha256-{digest}"
    _check_serving_pod(spec, vllm, hardware_class, "qualify")


def test_runtime_requalify_pods_planned_at_run_time_are_valid(monkeypatch, kubernetes_connection) -> None:
    """runtime_requalify's evaluate task is mapped over pod jobs planned at run time: the champion's
    weights on its pinned runtime and on the new one; render both."""
    from airflow.sdk import DAG

    from llmops.config import settings
    from llmops.core.podjob import PodJob
    from llmops.core.runtimes import Runtime, RuntimeAllowlist
    from llmops.launch.kubernetes import make_kubernetes_task, render_pod_manifest
    from llmops.refresh.runtime_requalify import requalification_jobs

    monkeypatch.setenv("LLMOPS_VLLM_IMAGE", VLLM_IMAGE)
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    conf = settings.load()
    digest = "ab" * 32
    pinned = Runtime(image=VLLM_IMAGE, vllm_version="0.32.0", accelerator="cuda", cuda="12.8", driver="570.133.20")
    new = Runtime(image="docker.io/vllm/vllm-openai@sha256:" + "e" * 64, vllm_version="0.33.0", accelerator="cuda",
                  cuda="12.9", driver="575.51.03")
    target = {"role": "champion", "version": "3", "weights_uri": f"s3://m/models/x/sha256-{digest}/",
              "weight_digest": digest, "runtime_image": pinned.image, "runtime_version": pinned.vllm_version}
    pairs = [{"runtime": new.to_dict(), "model": "x", "champion_version": "3", "target": target}]
    jobs = requalification_jobs(conf, pairs, evalset_config="e.yaml", limit_per_category=23, s3_endpoint=None,
                                tracking_uri="http://mlflow:5000",
                                known=RuntimeAllowlist(source="runtimes.yaml", runtimes=(pinned, new)))
    images = []
    for index, job in enumerate(jobs):
        with DAG(dag_id=f"requalify_{index}", schedule=None):
            task = make_kubernetes_task(PodJob.from_dict(job), task_id="evaluate")
        manifest = render_pod_manifest(task, {"params": {}})
        _validate(manifest, f"runtime_requalify pod {index}")
        _check_xcom_sidecar(manifest, kubernetes_connection, "evaluate")
        fetch, vllm = manifest["spec"]["initContainers"]
        assert fetch["args"][fetch["args"].index("--weight-digest") + 1] == digest
        images.append(vllm["image"])
    assert images == [pinned.image, new.image]


def test_both_launchers_run_the_same_pod_job(monkeypatch) -> None:
    local = {(d.dag_id, t.task_id): t.pod_job for d, t in _pod_tasks(_dagbag(monkeypatch, "local"), "LocalPodOperator")}
    kube = {(d.dag_id, t.task_id): t.pod_job
            for d, t in _pod_tasks(_dagbag(monkeypatch, "kubernetes"), "PodJobKubernetesOperator")}
    assert local and local.keys() == kube.keys()
    for key in local:
        assert local[key] == kube[key], f"{key}: the launchers got different pod jobs"
        assert local[key]["scheduling"]["hardware_class"] == "cpu"
