"""Secret values never leave a launcher: not in the task log, the failure message or the XCom.

The local launcher knows every secret it hands a container (it reads them from the local
secrets folder), so it runs a real process that leaks its secret everywhere and nothing of it
may come back. The kubernetes launcher never knows the values of the Secrets a pod reads: it
must only reference them (``secretKeyRef``), and redact what Airflow's masker knows; the pod is
mocked at the Kubernetes API boundary (no cluster here).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock
from urllib.parse import quote

import pytest

from llmops.config import settings as settings_mod
from llmops.core.podjob import Container, PodJob, SecretEnv
from llmops.launch.local import LocalPodRunner, PodFailed
from llmops.launch.redact import Redactor, secret_forms

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).parent / "pod_programs"
JOBS_IMAGE = "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "b2" * 32
VLLM_IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "a1" * 32
SECRET = 'tok-3x/"q"é-42'
"""A secret whose URL-encoded and JSON-escaped forms differ from it."""
FORMS = (SECRET, quote(SECRET, safe=""), json.dumps(SECRET)[1:-1])


def _assert_no_secret(where: str, text: str, secret: str = SECRET) -> None:
    for form in secret_forms(secret):
        assert form not in text, f"{where} shows the secret ({form!r}):\n{text}"


# -- the redactor -------------------------------------------------------------------------------


def test_redactor_hides_the_value_and_its_printed_forms_in_text_and_data() -> None:
    redactor = Redactor.for_secrets([SECRET])
    assert set(FORMS) <= redactor.values
    line = f"a {SECRET} b {quote(SECRET, safe='')} c {json.dumps(SECRET)}"
    assert redactor.text(line) == 'a *** b *** c "***"'
    data = {"ok": 1, "echo": f"x{SECRET}", SECRET: [SECRET, {"k": SECRET}], "none": None}
    assert redactor.data(data) == {"ok": 1, "echo": "x***", "***": ["***", {"k": "***"}], "none": None}


def test_redactor_follows_the_maskers_rule_for_short_values() -> None:
    """A 3-character secret would star every line holding those letters: like Airflow's masker,
    values under its minimum length ([logging] min_length_masked_secret) are not masked."""
    redactor = Redactor.for_secrets(["abc", "airflow", SECRET], min_length=5)
    assert redactor.text("abcdef airflow") == "abcdef airflow"
    assert redactor.text(SECRET) == "***"
    assert not Redactor.for_secrets(["abc"], min_length=5)


# -- the local launcher: a real process leaking its secret --------------------------------------


@pytest.fixture
def local_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> settings_mod.Settings:
    monkeypatch.setenv("LLMOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LLMOPS_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LLMOPS_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", settings_mod.DEFAULT_JOBS_IMAGE)
    monkeypatch.delenv("LLMOPS_LOCAL_RUNTIMES", raising=False)
    return settings_mod.load()


def leaky_job(settings: settings_mod.Settings, secret: str = SECRET, exit_code: int = 1) -> PodJob:
    """A pod job whose main container prints its secret, returns it and fails with it."""
    folder = settings.secrets_dir / "creds"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text(secret + "\n", encoding="utf-8")
    main = Container(name="job", image=settings.jobs_image, command=("python", str(PROGRAMS / "leaky_job.py")),
                     args=("--auth=$(TOKEN)",), env={"EXIT_CODE": str(exit_code)},
                     secret_env={"TOKEN": SecretEnv(secret="creds", key="token")})
    return PodJob(name="leaky", main=main)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _runner_with_log(settings: settings_mod.Settings) -> tuple[LocalPodRunner, _ListHandler]:
    log = logging.getLogger("test.redaction.pod")
    handler = _ListHandler()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return LocalPodRunner(settings, log=log), handler


def test_local_pod_log_failure_message_and_result_hide_the_secret(local_settings: settings_mod.Settings,
                                                                  tmp_path: Path) -> None:
    runner, handler = _runner_with_log(local_settings)
    try:
        with pytest.raises(PodFailed) as failed:
            runner.run(leaky_job(local_settings), tmp_path / "pod")
    finally:
        logging.getLogger("test.redaction.pod").removeHandler(handler)
    log_text = "\n".join(handler.lines)
    _assert_no_secret("the task log", log_text)
    _assert_no_secret("the failure message", str(failed.value))
    _assert_no_secret("the failed job's result", json.dumps(failed.value.xcom, ensure_ascii=False))
    # What was there is still there, with *** in the secret's place.
    assert "[job] token is ***" in log_text
    assert "[job] as url: https://example.org/?t=***" in log_text
    assert '[job] as json: {"token": "***"}' in log_text
    assert "--auth=***" in log_text  # the starting line: $(TOKEN) expanded in the args
    assert "failing with ***" in str(failed.value) and "exited with code 1" in str(failed.value)
    assert failed.value.xcom == {"status": "rejected", "echo": "***", "nested": [{"why": "bad ***"}],
                                 "***": "as a key", "problems": ["unrelated"]}


def test_local_result_of_a_successful_job_hides_the_secret(local_settings: settings_mod.Settings,
                                                           tmp_path: Path) -> None:
    result = LocalPodRunner(local_settings).run(leaky_job(local_settings, exit_code=0), tmp_path / "pod")
    assert result.xcom["echo"] == "***" and result.xcom["***"] == "as a key"
    _assert_no_secret("the XCom", json.dumps(result.xcom, ensure_ascii=False))


def test_local_secrets_are_registered_with_airflows_masker(local_settings: settings_mod.Settings,
                                                           tmp_path: Path) -> None:
    """What reaches the task log by any other path (the task runner's own error log) is masked
    by Airflow: the launcher registered the values it read."""
    from airflow.sdk._shared.secrets_masker import redact

    secret = "registered-" + tmp_path.name
    with pytest.raises(PodFailed):
        LocalPodRunner(local_settings).run(leaky_job(local_settings, secret=secret), tmp_path / "pod")
    assert redact(f"line with {secret} and {quote(secret, safe='')}") == "line with *** and ***"


def test_local_short_secret_is_not_masked_and_named_in_a_warning(local_settings: settings_mod.Settings,
                                                                  tmp_path: Path) -> None:
    runner, handler = _runner_with_log(local_settings)
    try:
        with pytest.raises(PodFailed) as failed:
            runner.run(leaky_job(local_settings, secret="ab1"), tmp_path / "pod")
    finally:
        logging.getLogger("test.redaction.pod").removeHandler(handler)
    log_text = "\n".join(handler.lines)
    assert "[job] token is ab1" in log_text and "failing with ab1" in str(failed.value)
    assert "***" not in log_text
    assert "env TOKEN (secret 'creds' key 'token') has fewer than 5 characters" in log_text


class FakeTaskInstance:
    """The task instance a launcher sees: its identity (for the pod's work folder) and XCom pushes."""

    dag_id, task_id, run_id, map_index, try_number = "redaction", "leaky", "manual__1", -1, 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_local_operator_task_log_error_and_xcom_hide_the_secret(
        local_settings: settings_mod.Settings, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    from llmops.launch.local_operator import LocalPodOperator

    op = LocalPodOperator(task_id="leaky", pod_job=leaky_job(local_settings).to_dict())
    ti = FakeTaskInstance()
    with caplog.at_level(logging.INFO), pytest.raises(PodFailed) as failed:
        op.execute({"ti": ti})
    captured = capsys.readouterr()
    task_log = captured.out + captured.err + caplog.text
    assert "token is ***" in task_log
    _assert_no_secret("the task log", task_log)
    _assert_no_secret("the task's error", str(failed.value))
    # The failed job's result is the task's XCom (as the KubernetesPodOperator pushes it), redacted.
    assert ti.pushed["return_value"]["echo"] == "***"
    _assert_no_secret("the pushed XCom", json.dumps(ti.pushed, ensure_ascii=False))


# -- the kubernetes launcher: Secrets are referenced, never copied -----------------------------

SENTINELS = {"conn_password": "SENTINEL-conn-password-7f3a", "conn_login": "SENTINEL-conn-login-7f3a",
             "conn_extra": "SENTINEL-conn-extra-secret-7f3a", "var_secret": "SENTINEL-var-secret-7f3a"}


class _Connections(dict):
    """Every connection a template asks for, each holding sentinel credentials."""

    def __missing__(self, conn_id: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(conn_id=conn_id, host="http://mlflow.llmops.svc:5000", schema="", port=None,
                               login=SENTINELS["conn_login"], password=SENTINELS["conn_password"],
                               extra_dejson={"endpoint_url": "",
                                             "aws_secret_access_key": SENTINELS["conn_extra"]})


class _TemplateTaskInstance:
    dag_id, task_id, run_id, map_index, try_number = "model_refresh", "stage", "manual__1", -1, 1

    @staticmethod
    def xcom_pull(task_ids: str | None = None, key: str = "return_value") -> dict:
        return {"etags": {"model.safetensors": "0123abcd"}, "runtime": {"vllm_version": "0.32.0"}}


def _sensitive_env_name(name: str) -> bool:
    from airflow.sdk._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS

    return any(field in name.lower() for field in DEFAULT_SENSITIVE_FIELDS)


@pytest.mark.parametrize("hardware_class", ["cpu", "h100x1"])
def test_every_dag_pod_gets_secrets_only_as_secret_key_refs(monkeypatch: pytest.MonkeyPatch,
                                                            hardware_class: str) -> None:
    """Rendered with connections and variables holding sentinel credentials, no pod of any DAG
    holds one, and every env var named like a credential comes from a Secret."""
    from airflow.dag_processing.dagbag import DagBag

    from llmops.launch.kubernetes import render_pod_manifest

    for name, value in {"LLMOPS_LAUNCHER": "kubernetes", "LLMOPS_VLLM_IMAGE": VLLM_IMAGE,
                        "LLMOPS_JOBS_IMAGE": JOBS_IMAGE, "LLMOPS_DEFAULT_HARDWARE_CLASS": hardware_class,
                        "LLMOPS_REFRESH_HARDWARE_CLASSES": hardware_class}.items():
        monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    tasks = [(dag, task) for dag in bag.dags.values() for task in dag.tasks
             if type(task).__name__ == "PodJobKubernetesOperator"]
    assert tasks
    for dag, task in tasks:
        context = {"params": {name: dag.params[name] for name in dag.params}, "run_id": "manual__1",
                   "ds": "2026-11-23", "dag": dag, "ti": _TemplateTaskInstance(),
                   "task_instance": _TemplateTaskInstance(), "conn": _Connections(),
                   "var": {"value": {"llmops_bucket_models": "llmops-models", "llmops_bucket_corpus": "llmops-corpus",
                                     "llmops_secret": SENTINELS["var_secret"]}}}
        manifest = render_pod_manifest(task, context)
        where = f"{dag.dag_id}.{task.task_id}"
        text = json.dumps(manifest)
        for what, sentinel in SENTINELS.items():
            assert sentinel not in text, f"{where}: the pod spec holds a {what}"
        spec = manifest["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            for env in container.get("env", []):
                if _sensitive_env_name(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), (
                        f"{where}, container {container['name']}: env {env['name']} must come from a "
                        f"Secret (secret_env), not a value")


# -- the kubernetes launcher: what the worker can know is redacted -----------------------------


def _kubernetes_task(settings: settings_mod.Settings) -> Any:
    from airflow.sdk import DAG

    from llmops.launch.kubernetes import make_kubernetes_task

    main = Container(name="job", image=settings.jobs_image, command=("python", "-m", "llmops.jobs.receive"),
                     secret_env={"TOKEN": SecretEnv("llmops-s3", "token")})
    with DAG(dag_id="redaction_kubernetes", schedule=None):
        return make_kubernetes_task(PodJob(name="leaky", main=main), task_id="leaky")


def fake_pod_api(monkeypatch: pytest.MonkeyPatch, *, exit_code: int, termination_message: str,
                 xcom: dict[str, Any]) -> MagicMock:
    """The KubernetesPodOperator's Kubernetes side, faked: the pod is created, runs, writes
    ``xcom`` as its return.json and terminates with ``exit_code`` and ``termination_message``."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    def terminated(pod: k8s.V1Pod, *args: Any, **kwargs: Any) -> k8s.V1Pod:
        state = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(
            exit_code=exit_code, reason="Error" if exit_code else "Completed", message=termination_message))
        pod.status = k8s.V1PodStatus(phase="Failed" if exit_code else "Succeeded", container_statuses=[
            k8s.V1ContainerStatus(name="base", state=state, ready=False, restart_count=0, image="x", image_id="x")])
        return pod

    def created(self: KubernetesPodOperator, pod_request_obj: k8s.V1Pod, context: Any) -> k8s.V1Pod:
        pod_request_obj.metadata.name = pod_request_obj.metadata.name or "leaky-abc"
        return pod_request_obj

    pod_manager = MagicMock(name="pod_manager")
    pod_manager.extract_xcom.return_value = json.dumps(xcom)
    pod_manager.await_pod_completion.side_effect = terminated
    monkeypatch.setattr(KubernetesPodOperator, "pod_manager", property(lambda self: pod_manager))
    monkeypatch.setattr(KubernetesPodOperator, "client", property(lambda self: MagicMock(name="client")))
    monkeypatch.setattr(KubernetesPodOperator, "get_or_create_pod", created)
    monkeypatch.setattr(KubernetesPodOperator, "find_pod", lambda self, namespace, context, **kw: self.pod)
    for waiting in ("await_pod_start", "await_init_containers_completion", "await_pod_completion"):
        monkeypatch.setattr(KubernetesPodOperator, waiting, lambda self, pod: None)
    build = KubernetesPodOperator.build_pod_request_obj
    monkeypatch.setattr(KubernetesPodOperator, "build_pod_request_obj",
                        lambda self, context=None, dry_run=False: build(self, context, dry_run=True))
    return pod_manager


def kube_context(task: Any, ti: FakeTaskInstance) -> dict[str, Any]:
    return {"ti": ti, "task_instance": ti, "params": {}, "run_id": "manual__1", "dag": task.dag}


def test_kubernetes_failure_message_and_xcom_hide_what_airflow_knows(
        kube_settings: settings_mod.Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value Airflow's masker holds (a connection password the task read, say) is redacted
    from the failure message (the pod's last lines) and from the return.json XCom."""
    from airflow.sdk.exceptions import AirflowException
    from airflow.sdk.log import mask_secret

    known = "known-to-airflow-5e1d"
    mask_secret(known)  # what Airflow does when a task reads a connection
    fake_pod_api(monkeypatch, exit_code=1, termination_message=f"Traceback...\nfailing with {known}",
                 xcom={"status": "error", "echo": known, known: [f"bad {known}"], "tokens_per_s": 12.5})
    task = _kubernetes_task(kube_settings)
    ti = FakeTaskInstance()
    with pytest.raises(AirflowException) as failed:
        task.execute(kube_context(task, ti))
    assert "failing with ***" in str(failed.value)
    _assert_no_secret("the failure message", str(failed.value), known)
    # The KPO pushes a failed pod's return.json; a key named like a secret word is not hidden.
    assert ti.pushed["return_value"] == {"status": "error", "echo": "***", "***": ["bad ***"], "tokens_per_s": 12.5}


def test_kubernetes_returned_xcom_hides_what_airflow_knows(kube_settings: settings_mod.Settings,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.log import mask_secret

    known = "known-to-airflow-9b2c"
    mask_secret(known)
    fake_pod_api(monkeypatch, exit_code=0, termination_message="", xcom={"status": "ok", "uri": f"s3://{known}/x"})
    task = _kubernetes_task(kube_settings)
    ti = FakeTaskInstance()
    assert task.execute(kube_context(task, ti)) == {
        "status": "ok", "uri": "s3://***/x"}


def test_kubernetes_pod_log_line_with_a_registered_secret_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pod log lines reach the task log through the provider's PodManager logger, which Airflow's
    log processor masks. Checked up to the log event (the task supervisor writes it to the file)."""
    from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager
    from airflow.sdk.log import mask_logs, mask_secret
    from kubernetes.client import models as k8s
    from structlog.testing import capture_logs

    known = "known-to-airflow-c41f"
    mask_secret(known)
    manager = PodManager(kube_client=MagicMock(name="CoreV1Api"))
    lines = [f"2026-11-23T00:00:0{i}.000000000Z {text}\n".encode() for i, text in
             enumerate(["starting", f"token is {known}", "done"])]
    monkeypatch.setattr(manager, "read_pod_logs", lambda **kwargs: iter(lines))
    monkeypatch.setattr(manager, "container_is_running", lambda pod, container_name: False)
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="leaky-abc", namespace="llmops"))
    with capture_logs(processors=[mask_logs]) as events:
        manager.fetch_container_logs(pod, "base", follow=False)
    logged = json.dumps(events, default=str)
    assert "token is ***" in logged, logged
    assert known not in logged
