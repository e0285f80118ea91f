"""The kubernetes launcher: render the pod of a vLLM serving job per hardware class, offline.

No cluster: ``render_pod_manifest`` renders the operator's template fields with a minimal
context (``params``), builds the pod with ``build_pod_request_obj(dry_run=True)`` and returns
the camelCase manifest, which is validated (strict) against the schema of the oldest Kubernetes
the project supports (``KUBERNETES_MIN_VERSION``) and of the newest the validator ships.

The operator DAG files build is cheap at parse time: the provider's ``KubernetesPodOperator``
is built from the rendered pod job when the task runs, and does the work (execute, on_kill,
resumption from its trigger); the tests at the end check that hand-over.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from airflow.sdk import DAG

from llmops.config import settings as settings_mod
from llmops.config.kubernetes import KUBERNETES_CONN_ID, KUBERNETES_MIN_VERSION
from llmops.core.hardware import load_hardware_class
from llmops.core.podjob import Container, PodJob, PodJobError, Resources, SecretEnv, Volume
from llmops.launch.kubernetes import PodJobKubernetesOperator, make_kubernetes_task, render_pod_manifest
from llmops.launch.pod_policy import (
    IMAGE_PULL_MARGIN_S,
    MODEL_CACHE_CLAIM,
    XCOM_SIDECAR_CONTAINER,
    UnpinnedImageError,
    XComSidecarError,
    refuse_unsafe_xcom_sidecar,
)
from llmops.serving.vllm import pool_kwargs, serving_pod_job, vllm_sidecar

VLLM_IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "a1" * 32
JOBS_IMAGE = "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "b2" * 32
CLASSES = ("h100x1", "h100x2", "b200x4", "cpu")
PARAMS = {"model": "tiny-chat", "evalset": "synthetic_chat_v1"}
ROOT = Path(__file__).resolve().parents[2]
PINNED_ALPINE = "docker.io/library/alpine:3.24.2@sha256:" + "e5" * 32  # made up: tests need no pull
SIDECAR_RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}
RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> settings_mod.Settings:
    """Digest-pinned images, as production sets them (never by editing the defaults)."""
    monkeypatch.setenv("LLMOPS_VLLM_IMAGE", VLLM_IMAGE)
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    return settings_mod.load()


def _evaluate_container(image: str) -> Container:
    return Container(
        name="evaluate",
        image=image,
        command=("python", "-m", "llmops.jobs.evaluate"),
        args=("--model", "{{ params.model }}", "--evalset", "include/evalsets/{{ params.evalset }}.yaml"),
        env={"MLFLOW_TRACKING_URI": "http://mlflow.llmops:5000", "OPENAI_BASE_URL": "http://127.0.0.1:$(VLLM_PORT)/v1"},
        secret_env={"AWS_SECRET_ACCESS_KEY": SecretEnv(secret="llmops-s3", key="secret_access_key")},
        resources=Resources(cpu="1", memory="2Gi"),
    )


def _serving_job(settings: settings_mod.Settings, hw_name: str, *, jobs_image: str | None = None,
                 vllm_image: str | None = None) -> PodJob:
    hw = load_hardware_class(hw_name, settings.hardware_configs_dir)
    return serving_pod_job(
        name=f"evaluate-{hw_name}",
        hw=hw,
        main=_evaluate_container(jobs_image or settings.jobs_image),
        model_path="/models/{{ params.model }}",
        served_model_name="{{ params.model }}",
        vllm_image=vllm_image or settings.vllm_image,
        labels={"app.kubernetes.io/part-of": "llmops"},
        timeout_s=5400,
    )


def _operator(job: PodJob, **kwargs: Any) -> PodJobKubernetesOperator:
    with DAG(dag_id=f"test_{job.name.replace('-', '_')}", params=PARAMS, schedule=None):
        return make_kubernetes_task(job, task_id="evaluate", **kwargs)


def _render(job: PodJob, **kwargs: Any) -> dict[str, Any]:
    return render_pod_manifest(_operator(job, **kwargs), {"params": dict(PARAMS)})


def _validate(manifest: dict[str, Any]) -> None:
    for version in (KUBERNETES_MIN_VERSION, kubernetes_validate.latest_version()):
        kubernetes_validate.validate(manifest, version, strict=True)


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _by_name(container.get("env", []))


@pytest.fixture(params=CLASSES)
def rendered(request: pytest.FixtureRequest, settings: settings_mod.Settings) -> tuple[Any, PodJob, dict[str, Any]]:
    hw = load_hardware_class(request.param, settings.hardware_configs_dir)
    job = _serving_job(settings, request.param)
    return hw, job, _render(job)


# -- the rendered pod, per hardware class -------------------------------------------------------


def test_manifest_is_valid_from_the_minimum_kubernetes_to_the_newest(rendered: Any) -> None:
    _, _, manifest = rendered
    _validate(manifest)
    assert manifest["kind"] == "Pod" and manifest["spec"]["restartPolicy"] == "Never"


def test_gpus_requested_and_limited_on_the_vllm_sidecar(rendered: Any) -> None:
    hw, _, manifest = rendered
    vllm = _by_name(manifest["spec"]["initContainers"])["vllm"]
    base = _by_name(manifest["spec"]["containers"])["base"]
    if hw.gpu.count:
        assert vllm["resources"]["requests"]["nvidia.com/gpu"] == str(hw.gpu.count)
        assert vllm["resources"]["limits"]["nvidia.com/gpu"] == str(hw.gpu.count)
    else:
        assert "nvidia.com/gpu" not in vllm["resources"]["requests"]
        assert "nvidia.com/gpu" not in vllm["resources"]["limits"]
    assert vllm["resources"]["requests"]["cpu"] == hw.resources.cpu
    assert vllm["resources"]["requests"]["memory"] == vllm["resources"]["limits"]["memory"] == hw.resources.memory
    assert "nvidia.com/gpu" not in base["resources"]["requests"]


def test_scheduling_comes_from_the_hardware_class(rendered: Any) -> None:
    hw, job, manifest = rendered
    spec = manifest["spec"]
    assert spec["nodeSelector"] == hw.node_selector
    tolerations = spec.get("tolerations") or []
    if hw.gpu.count:
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    else:
        assert tolerations == []
    assert manifest["metadata"]["labels"]["llmops.io/hardware-class"] == hw.name
    assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llmops"
    assert spec["activeDeadlineSeconds"] == job.timeout_s == 5400


def test_every_container_is_restricted(rendered: Any, settings: settings_mod.Settings) -> None:
    _, _, manifest = rendered
    spec = manifest["spec"]
    containers = [*spec["initContainers"], *spec["containers"]]
    assert {c["name"] for c in containers} == {"vllm", "base", "airflow-xcom-sidecar"}
    for container in containers:
        assert container["securityContext"] == RESTRICTED, container["name"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0 and pod["fsGroup"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["serviceAccountName"] == settings.service_account
    assert manifest["metadata"]["namespace"] == settings.namespace
    assert spec["automountServiceAccountToken"] is False


def test_vllm_is_a_native_sidecar_probed_on_health(rendered: Any) -> None:
    _, job, manifest = rendered
    port = job.ports["VLLM_PORT"]
    vllm = _by_name(manifest["spec"]["initContainers"])["vllm"]
    assert vllm["restartPolicy"] == "Always"
    for probe in (vllm["startupProbe"], vllm["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/health", "port": port}
    startup = vllm["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert vllm["ports"] == [{"containerPort": port, "name": "vllm-port", "protocol": "TCP"}]
    assert vllm["command"] == ["vllm", "serve"]


def test_port_env_on_every_job_container_and_refs_left_for_the_kubelet(rendered: Any) -> None:
    hw, job, manifest = rendered
    vllm = _by_name(manifest["spec"]["initContainers"])["vllm"]
    base = _by_name(manifest["spec"]["containers"])["base"]
    for container in (vllm, base):
        assert container["env"][0] == {"name": "VLLM_PORT", "value": str(job.ports["VLLM_PORT"])}
    args = vllm["args"]
    assert args[args.index("--port") + 1] == "$(VLLM_PORT)"
    assert args[args.index("--tensor-parallel-size") + 1] == str(hw.vllm.tensor_parallel_size)
    assert args[args.index("--kv-cache-dtype") + 1] == hw.vllm.kv_cache_dtype
    assert _env(base)["OPENAI_BASE_URL"]["value"] == "http://127.0.0.1:$(VLLM_PORT)/v1"
    for name, value in hw.vllm.env.items():
        assert _env(vllm)[name]["value"] == value


def test_volumes_model_cache_shm_and_scratch(rendered: Any) -> None:
    hw, _, manifest = rendered
    spec = manifest["spec"]
    volumes = _by_name(spec["volumes"])
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": MODEL_CACHE_CLAIM}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": hw.resources.shm_size}
    assert volumes["scratch"]["emptyDir"] == {}
    assert "xcom" in volumes
    for container in (_by_name(spec["initContainers"])["vllm"], _by_name(spec["containers"])["base"]):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/models"] == "model-cache" and mounts["/dev/shm"] == "shm" and mounts["/scratch"] == "scratch"
    base_mounts = {m["mountPath"] for m in _by_name(spec["containers"])["base"]["volumeMounts"]}
    assert "/airflow/xcom" in base_mounts


def test_secret_env_is_a_secret_key_ref(rendered: Any) -> None:
    _, _, manifest = rendered
    base = _by_name(manifest["spec"]["containers"])["base"]
    assert _env(base)["AWS_SECRET_ACCESS_KEY"] == {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "llmops-s3", "key": "secret_access_key"}},
    }
    # Secrets never appear as literal values.
    assert all("value" not in e for e in base["env"] if e["name"] == "AWS_SECRET_ACCESS_KEY")


def test_templates_are_rendered_in_the_pod(rendered: Any) -> None:
    hw, _, manifest = rendered
    base = _by_name(manifest["spec"]["containers"])["base"]
    vllm = _by_name(manifest["spec"]["initContainers"])["vllm"]
    assert base["name"] == "base"
    assert base["command"] == ["python", "-m", "llmops.jobs.evaluate"]
    assert base["args"] == ["--model", "tiny-chat", "--evalset", "include/evalsets/synthetic_chat_v1.yaml"]
    assert vllm["args"][0] == "/models/tiny-chat"
    assert vllm["args"][vllm["args"].index("--served-model-name") + 1] == "tiny-chat"
    assert "{{" not in str(manifest)
    assert _env(base)["LLMOPS_HARDWARE_CONFIG_HASH"]["value"] == hw.config_hash


# -- the operator ------------------------------------------------------------------------------


def test_operator_contract(settings: settings_mod.Settings) -> None:
    job = _serving_job(settings, "h100x2")
    hw = load_hardware_class("h100x2", settings.hardware_configs_dir)
    op = _operator(job, **pool_kwargs(hw))
    assert "pod_job" in op.template_fields
    assert op.do_xcom_push is True
    assert op.pool == "gpu-h100" and op.pool_slots == 2
    assert op.pod_job == job.to_dict()
    # The pod stays Pending until vLLM's startup probe passes: the KPO must wait that long.
    probe = job.sidecars[0].readiness_probe
    assert probe is not None
    kpo = op.kubernetes_operator()
    assert kpo.startup_timeout_seconds >= IMAGE_PULL_MARGIN_S + probe.period_s * probe.failure_threshold


def test_operator_kwargs_override_defaults(settings: settings_mod.Settings) -> None:
    manifest = _render(_serving_job(settings, "cpu"), namespace="other", model_cache_claim="models-ro",
                       labels={"team": "ml"})
    assert manifest["metadata"]["namespace"] == "other"
    assert manifest["metadata"]["labels"]["team"] == "ml"
    assert _by_name(manifest["spec"]["volumes"])["model-cache"]["persistentVolumeClaim"]["claimName"] == "models-ro"


def test_dry_run_without_context_keeps_templates(settings: settings_mod.Settings) -> None:
    manifest = render_pod_manifest(_operator(_serving_job(settings, "cpu")))
    _validate(manifest)
    assert "{{ params.model }}" in _by_name(manifest["spec"]["containers"])["base"]["args"]


def test_plain_job_without_sidecars(settings: settings_mod.Settings) -> None:
    job = PodJob(name="parse-shard", main=Container(name="parse", image=settings.jobs_image,
                                                     command=("python", "-m", "llmops.jobs.parse")),
                 volumes=(Volume(name="scratch", mount_path="/scratch", kind="scratch", size_limit="10Gi"),))
    manifest = _render(job)
    _validate(manifest)
    assert manifest["spec"]["initContainers"] == []
    assert _by_name(manifest["spec"]["volumes"])["scratch"]["emptyDir"] == {"sizeLimit": "10Gi"}


# -- refusals ----------------------------------------------------------------------------------


def test_unpinned_vllm_image_is_refused(settings: settings_mod.Settings) -> None:
    job = _serving_job(settings, "h100x1", vllm_image="docker.io/vllm/vllm-openai:v0.32.0")
    with pytest.raises(UnpinnedImageError) as info:
        _operator(job)
    message = str(info.value)
    assert "container 'vllm'" in message
    assert "'docker.io/vllm/vllm-openai:v0.32.0'" in message
    assert "LLMOPS_VLLM_IMAGE=docker.io/vllm/vllm-openai@sha256:" in message


def test_unpinned_jobs_image_is_refused(settings: settings_mod.Settings) -> None:
    job = _serving_job(settings, "cpu", jobs_image="ghcr.io/llmops-lifecycle/llmops-jobs:0.1.0")
    with pytest.raises(UnpinnedImageError, match=r"container 'evaluate'.*llmops-jobs:0\.1\.0.*LLMOPS_JOBS_IMAGE"):
        _operator(job)


def test_default_settings_images_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOPS_VLLM_IMAGE", raising=False)
    monkeypatch.delenv("LLMOPS_JOBS_IMAGE", raising=False)
    with pytest.raises(UnpinnedImageError, match="not pinned by digest"):
        _operator(_serving_job(settings_mod.load(), "cpu"))


def test_templated_image_is_checked_after_rendering(settings: settings_mod.Settings) -> None:
    job = PodJob(name="templated", main=Container(name="job", image="{{ params.image }}", command=("true",)))
    with DAG(dag_id="test_templated_image", params={"image": "ghcr.io/x/y:latest"}, schedule=None):
        op = make_kubernetes_task(job, task_id="job")
    with pytest.raises(UnpinnedImageError, match=r"container 'job'.*ghcr\.io/x/y:latest"):
        render_pod_manifest(op, {"params": {"image": "ghcr.io/x/y:latest"}})


def test_xcom_volume_name_is_reserved(settings: settings_mod.Settings) -> None:
    job = PodJob(name="clash", main=Container(name="job", image=settings.jobs_image, command=("true",)),
                 volumes=(Volume(name="xcom", mount_path="/data", kind="scratch"),))
    with pytest.raises(PodJobError, match="reserved"):
        _render(job)


def test_rendered_job_is_validated_again(settings: settings_mod.Settings) -> None:
    job = PodJob(name="bad-port", main=Container(name="job", image=settings.jobs_image, command=("true",)))
    data = job.to_dict()
    data["ports"] = {"PORT": "{{ params.port }}"}
    with DAG(dag_id="test_bad_port", params={"port": "99999"}, schedule=None):
        op = PodJobKubernetesOperator(task_id="job", pod_job=data)
    with pytest.raises(PodJobError, match="PORT=99999"):
        render_pod_manifest(op, {"params": {"port": "99999"}})


# -- serving helpers ---------------------------------------------------------------------------


def test_vllm_sidecar_for_cpu(settings: settings_mod.Settings) -> None:
    hw = load_hardware_class("cpu", settings.hardware_configs_dir)
    sidecar = vllm_sidecar(hw, "/models/tiny-chat", "tiny-chat", settings.vllm_image)
    assert sidecar.command == ("vllm", "serve")
    assert sidecar.resources.gpus == 0
    assert sidecar.readiness_probe is not None and sidecar.readiness_probe.path == "/health"
    assert sidecar.readiness_probe.port_env == "VLLM_PORT"
    assert sidecar.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert sidecar.env["VLLM_CACHE_ROOT"].startswith("/scratch/")
    assert "--enforce-eager" in sidecar.args


def test_serving_job_round_trips_through_its_dict(settings: settings_mod.Settings) -> None:
    job = _serving_job(settings, "b200x4")
    assert PodJob.from_dict(job.to_dict()) == job
    assert job.scheduling.hardware_class == "b200x4"
    assert [c.name for c in job.containers] == ["vllm", "evaluate"]


def test_init_containers_run_first_then_native_sidecars(settings: settings_mod.Settings) -> None:
    from dataclasses import replace

    fetch = Container(name="fetch-weights", image=JOBS_IMAGE, command=("python", "-m", "llmops.jobs.fetch"),
                      args=("--dest", "/models/{{ params.model }}"))
    job = replace(_serving_job(settings, "h100x1"), init_containers=(fetch,))
    manifest = _render(job)
    _validate(manifest)
    init = manifest["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["fetch-weights", "vllm"]
    assert "restartPolicy" not in init[0] and init[1]["restartPolicy"] == "Always"
    assert init[0]["args"] == ["--dest", "/models/tiny-chat"]
    assert init[0]["securityContext"]["runAsNonRoot"] is True
    assert {m["mountPath"] for m in init[0]["volumeMounts"]} >= {"/models"}
    unpinned = replace(job, init_containers=(replace(fetch, image="ghcr.io/x/fetch:latest"),))
    with pytest.raises(UnpinnedImageError, match="fetch-weights"):
        _render(unpinned)


# -- parse time: the operator is cheap; the KPO is built when the task runs ----------------------


def test_building_tasks_imports_no_pod_machinery(tmp_path) -> None:
    """A DAG file's tasks (plain and mapped) are built without the provider or the Kubernetes client."""
    import json
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(f"""
import json, sys
from airflow.sdk import DAG
before = set(sys.modules)  # Airflow itself imports a few provider modules (exceptions, provider info)
from llmops.core.podjob import Container, PodJob
from llmops.launch import mapped_pod_job_task, pod_job_task
job = PodJob(name="job", main=Container(name="job", image={JOBS_IMAGE!r}, command=("true",)))
with DAG(dag_id="probe", schedule=None):
    pod_job_task(job, task_id="plain", launcher="kubernetes", namespace="other")
    mapped_pod_job_task(task_id="mapped", pod_jobs=[job.to_dict()], launcher="kubernetes", namespace="other",
                        max_pod_timeout_s=600)
print(json.dumps(sorted(m for m in set(sys.modules) - before
                        if m.split(".")[0] == "kubernetes" or m.startswith("airflow.providers.cncf"))))
""")
    env = {**__import__("os").environ, "LLMOPS_JOBS_IMAGE": JOBS_IMAGE, "LLMOPS_VLLM_IMAGE": VLLM_IMAGE}
    out = subprocess.run([sys.executable, str(script)], check=True, capture_output=True, text=True, env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _task_context(op: PodJobKubernetesOperator) -> dict[str, Any]:
    class _TI:
        dag_id, task_id, run_id, map_index, try_number = "test_evaluate_cpu", op.task_id, "manual__1", -1, 1

    return {"params": dict(PARAMS), "ti": _TI(), "task_instance": _TI(), "run_id": "manual__1", "dag": op.dag}


def test_execute_hands_the_rendered_pod_to_the_kubernetes_pod_operator(
        settings: settings_mod.Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.bases.operator import ExecutorSafeguard

    ran: list[KubernetesPodOperator] = []

    def execute_sync(self: KubernetesPodOperator, context: Any) -> Any:
        ran.append(self)
        return {"accuracy": 0.9}  # what the xcom sidecar read from /airflow/xcom/return.json

    monkeypatch.setattr(KubernetesPodOperator, "execute_sync", execute_sync)
    monkeypatch.setattr(ExecutorSafeguard, "test_mode", False)  # the nested-operator warning is on
    op = _operator(_serving_job(settings, "cpu"), namespace="{{ params.model }}", labels={"team": "ml"})
    context = _task_context(op)
    op.render_template_fields(context)  # what the task runner does before execute, then execute so:
    runner_marker = {"PodJobKubernetesOperator__sentinel": ExecutorSafeguard.sentinel_value}
    assert op.execute(context, **runner_marker) == {"accuracy": 0.9}
    (kpo,) = ran
    assert kpo is op._pod_operator and kpo.task_id == op.task_id
    assert kpo.namespace == "tiny-chat"  # the KPO's own template fields rendered, with the DAG's params
    assert kpo.labels["team"] == "ml" and kpo.labels["llmops.io/hardware-class"] == "cpu"
    assert kpo.arguments == ["--model", "tiny-chat", "--evalset", "include/evalsets/synthetic_chat_v1.yaml"]
    assert kpo.do_xcom_push is True and kpo.name == "evaluate-cpu"
    captured = capsys.readouterr()  # Airflow's structlog output
    assert "cannot be called outside of the Task Runner" not in captured.out + captured.err


def test_on_kill_reaches_the_running_pod_operator(settings: settings_mod.Settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    killed: list[KubernetesPodOperator] = []
    monkeypatch.setattr(KubernetesPodOperator, "execute_sync", lambda self, context: None)
    monkeypatch.setattr(KubernetesPodOperator, "on_kill", lambda self: killed.append(self))
    op = _operator(_serving_job(settings, "cpu"))
    op.on_kill()  # not started: nothing to kill
    assert killed == []
    op.execute(_task_context(op))
    op.on_kill()
    assert killed == [op._pod_operator]


def test_deferred_task_resumes_on_the_pod_operator(settings: settings_mod.Settings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.exceptions import TaskDeferralError

    resumed: list[tuple[KubernetesPodOperator, dict[str, Any]]] = []

    def trigger_reentry(self: KubernetesPodOperator, context: Any, event: dict[str, Any]) -> Any:
        resumed.append((self, event))
        return {"ok": True}

    monkeypatch.setattr(KubernetesPodOperator, "trigger_reentry", trigger_reentry)
    op = _operator(_serving_job(settings, "cpu"), deferrable=True)
    event = {"status": "success", "name": "evaluate-cpu-abc", "namespace": "llmops"}
    assert op.resume_execution("trigger_reentry", {"event": event}, _task_context(op)) == {"ok": True}
    ((kpo, got),) = resumed
    assert got == event and kpo.deferrable is True and kpo is op._pod_operator
    with pytest.raises(TaskDeferralError, match="boom"):
        op.resume_execution("__fail__", {"error": "boom"}, _task_context(op))


def test_mapped_task_passes_kubernetes_arguments(settings: settings_mod.Settings) -> None:
    from llmops.launch import mapped_pod_job_task

    job = _serving_job(settings, "cpu")
    with DAG(dag_id="test_mapped", params=PARAMS, schedule=None):
        mapped = mapped_pod_job_task(task_id="evaluate", pod_jobs=[job.to_dict()], launcher="kubernetes",
                                     max_pod_timeout_s=600, pool="cpu", namespace="other",
                                     model_cache_claim="models-ro")
    assert mapped.partial_kwargs["kubernetes_kwargs"] == {"namespace": "other"}
    assert mapped.partial_kwargs["execution_timeout"].total_seconds() == 600 + 900  # the deadline + overhead
    op = mapped.unmap({"pod_job": job.to_dict()})
    assert isinstance(op, PodJobKubernetesOperator) and op.pool == "cpu"
    manifest = render_pod_manifest(op, {"params": dict(PARAMS)})
    _validate(manifest)
    assert manifest["metadata"]["namespace"] == "other"
    assert _by_name(manifest["spec"]["volumes"])["model-cache"]["persistentVolumeClaim"]["claimName"] == "models-ro"


def test_unknown_kubernetes_argument_fails_when_the_pod_is_built(settings: settings_mod.Settings) -> None:
    op = _operator(_serving_job(settings, "cpu"), namespase="typo")
    assert op.kubernetes_kwargs["namespase"] == "typo"
    with pytest.raises(TypeError, match="namespase"):
        render_pod_manifest(op, {"params": dict(PARAMS)})


# -- the provider's XCom sidecar -----------------------------------------------------------------


def _connect(monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    """The ``kubernetes_default`` connection with ``extra`` (Airflow's JSON form, in the environment)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{KUBERNETES_CONN_ID.upper()}",
                       json.dumps({"conn_type": "kubernetes", "extra": {"in_cluster": True, **extra}}))


def _build_pod(settings: settings_mod.Settings, *, dry_run: bool = False, **kwargs: Any) -> dict[str, Any]:
    """The pod a run of a serving task builds (the KPO's ``build_pod_request_obj``), as a manifest."""
    from llmops.launch.kubernetes_pod import manifest

    op = _operator(_serving_job(settings, "cpu"), **kwargs)
    context = _task_context(op)
    op.render_template_fields(context)
    kpo = op.kubernetes_operator(context)
    kpo.hook._is_in_cluster = True  # no cluster here: what load_incluster_config() reports in a pod
    return manifest(kpo.build_pod_request_obj(context, dry_run=dry_run))


def test_provider_names_its_xcom_sidecar_as_the_policy_expects() -> None:
    from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults

    assert PodDefaults.SIDECAR_CONTAINER_NAME == XCOM_SIDECAR_CONTAINER


def test_pod_with_the_providers_default_xcom_sidecar_is_not_created(settings: settings_mod.Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _connect(monkeypatch)  # no xcom_sidecar_container_* extras: the provider's alpine tag, no limits
    with pytest.raises(XComSidecarError) as info:
        _build_pod(settings)
    message = str(info.value)
    assert f"container '{XCOM_SIDECAR_CONTAINER}'" in message and "is not pinned by digest" in message
    assert "xcom_sidecar_container_image" in message and f"'{KUBERNETES_CONN_ID}'" in message
    # A dry run (rendering for inspection) shows the pod as configured.
    sidecar = _by_name(_build_pod(settings, dry_run=True)["spec"]["containers"])[XCOM_SIDECAR_CONTAINER]
    assert "@sha256:" not in sidecar["image"]


def test_pod_with_an_unlimited_xcom_sidecar_is_not_created(settings: settings_mod.Settings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _connect(monkeypatch, xcom_sidecar_container_image=PINNED_ALPINE,
             xcom_sidecar_container_resources=json.dumps({"requests": {"cpu": "1m", "memory": "10Mi"}}))
    with pytest.raises(XComSidecarError,
                       match=rf"no memory limit.*xcom_sidecar_container_resources.*'{KUBERNETES_CONN_ID}'"):
        _build_pod(settings)


def test_pod_with_a_pinned_limited_xcom_sidecar_is_created(settings: settings_mod.Settings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _connect(monkeypatch, xcom_sidecar_container_image=PINNED_ALPINE,
             xcom_sidecar_container_resources=json.dumps(SIDECAR_RESOURCES))
    manifest = _build_pod(settings)
    sidecar = _by_name(manifest["spec"]["containers"])[XCOM_SIDECAR_CONTAINER]
    assert sidecar["image"] == PINNED_ALPINE and sidecar["resources"] == SIDECAR_RESOURCES
    for key, value in RESTRICTED.items():
        assert sidecar["securityContext"][key] == value, key
    _validate(manifest)


def test_pod_without_xcom_push_needs_no_sidecar_settings(settings: settings_mod.Settings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _connect(monkeypatch)
    manifest = _build_pod(settings, do_xcom_push=False)
    assert XCOM_SIDECAR_CONTAINER not in _by_name(manifest["spec"]["containers"])


def test_the_projects_connection_gives_a_sidecar_the_launcher_accepts(settings: settings_mod.Settings,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.embedded.airflow_settings import AirflowSettingsFile

    name = f"AIRFLOW_CONN_{KUBERNETES_CONN_ID.upper()}"
    monkeypatch.setenv(name, AirflowSettingsFile.load(ROOT / "airflow_settings.yaml").env()[name])
    sidecar = _by_name(_build_pod(settings)["spec"]["containers"])[XCOM_SIDECAR_CONTAINER]
    assert "@sha256:" in sidecar["image"] and sidecar["resources"]["limits"]["memory"]


@pytest.mark.parametrize(("sidecar", "error"), [
    ({"image": "alpine:3.24.2", "resources": {"limits": {"memory": "32Mi"}}}, "xcom_sidecar_container_image"),
    ({"image": "alpine@sha256:" + "ab" * 16, "resources": {"limits": {"memory": "32Mi"}}},
     "xcom_sidecar_container_image"),
    ({"image": PINNED_ALPINE, "resources": {"requests": {"memory": "16Mi"}}}, "xcom_sidecar_container_resources"),
    ({"image": PINNED_ALPINE}, "xcom_sidecar_container_resources"),
    ({"image": PINNED_ALPINE, "resources": {"limits": {"memory": "32Mi"}}}, None),
])
def test_xcom_sidecar_policy(sidecar: dict[str, Any], error: str | None) -> None:
    pod = {"metadata": {"name": "job-abc"},
           "spec": {"containers": [{"name": "base", "image": "x:latest"},
                                   {"name": XCOM_SIDECAR_CONTAINER, **sidecar}]}}
    if error is None:
        refuse_unsafe_xcom_sidecar(pod)
        return
    with pytest.raises(XComSidecarError, match=rf"pod 'job-abc'.*{error}.*'{KUBERNETES_CONN_ID}'"):
        refuse_unsafe_xcom_sidecar(pod)
