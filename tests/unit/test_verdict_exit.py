"""A job exiting with ``VERDICT_EXIT_CODE`` (the input is wrong) fails its task without retries;
any other non-zero exit stays retryable. Both launchers; the job's result is pushed either way,
so teardown tasks can read why. The Kubernetes side is faked at the API (no cluster here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

# The leaky pod job and the faked Kubernetes API are the redaction tests' (tests/unit is on sys.path).
from test_launcher_redaction import (
    PROGRAMS,
    FakeTaskInstance,
    fake_pod_api,
    kube_context,
    leaky_job,
)

from llmops.config import settings as settings_mod
from llmops.core.podjob import VERDICT_EXIT_CODE, Container, PodJob, SecretEnv
from llmops.launch.local import PodFailed


@pytest.fixture
def local_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> settings_mod.Settings:
    monkeypatch.setenv("LLMOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LLMOPS_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", settings_mod.DEFAULT_JOBS_IMAGE)
    monkeypatch.delenv("LLMOPS_LOCAL_RUNTIMES", raising=False)
    return settings_mod.load()


def _run_local(job: PodJob, *, multiple_outputs: bool = False) -> tuple[BaseException, FakeTaskInstance]:
    from llmops.launch.local_operator import LocalPodOperator

    op = LocalPodOperator(task_id="leaky", pod_job=job.to_dict(), multiple_outputs=multiple_outputs)
    ti = FakeTaskInstance()
    with pytest.raises(Exception) as failed:
        op.execute({"ti": ti})
    return failed.value, ti


def test_local_verdict_exit_fails_without_retry_and_pushes_the_result(
        local_settings: settings_mod.Settings) -> None:
    assert VERDICT_EXIT_CODE == 2
    error, ti = _run_local(leaky_job(local_settings, exit_code=VERDICT_EXIT_CODE), multiple_outputs=True)
    assert isinstance(error, AirflowFailException), repr(error)
    assert "exited with code 2" in str(error)
    assert ti.pushed["return_value"]["status"] == "rejected"
    assert ti.pushed["status"] == "rejected"  # multiple_outputs fans the keys out, as on success


def test_local_other_exit_code_is_retryable_and_pushes_the_result(local_settings: settings_mod.Settings) -> None:
    error, ti = _run_local(leaky_job(local_settings, exit_code=1))
    assert isinstance(error, PodFailed) and not isinstance(error, AirflowFailException), repr(error)
    assert error.exit_code == 1
    assert ti.pushed["return_value"]["status"] == "rejected"


def test_local_init_container_exit_2_is_not_a_verdict(local_settings: settings_mod.Settings) -> None:
    """Only the main container judges the input; an init container's exit 2 is an error."""
    job = leaky_job(local_settings, exit_code=0)
    init = Container(name="init", image=job.main.image, command=("python", str(PROGRAMS / "leaky_job.py")),
                     env={"EXIT_CODE": "2"}, secret_env={"TOKEN": SecretEnv("creds", "token")})
    error, ti = _run_local(PodJob(name=job.name, main=job.main, init_containers=(init,)))
    assert isinstance(error, PodFailed) and not isinstance(error, AirflowFailException), repr(error)
    assert error.container == "init" and error.exit_code == 2
    assert ti.pushed == {}


def _run_kubernetes(settings: settings_mod.Settings, monkeypatch: pytest.MonkeyPatch,
                    exit_code: int) -> tuple[BaseException, FakeTaskInstance]:
    from airflow.sdk import DAG

    from llmops.launch.kubernetes import make_kubernetes_task

    fake_pod_api(monkeypatch, exit_code=exit_code, termination_message="drop rejected: 1 corrupted file",
                 xcom={"status": "rejected", "problems": ["model.safetensors: sha256 mismatch"]})
    main = Container(name="receive", image=settings.jobs_image, command=("python", "-m", "llmops.jobs.receive"))
    with DAG(dag_id="verdict_kubernetes", schedule=None):
        task = make_kubernetes_task(PodJob(name="receive", main=main), task_id="receive")
    ti = FakeTaskInstance()
    with pytest.raises(Exception) as failed:
        task.execute(kube_context(task, ti))
    return failed.value, ti


def test_kubernetes_verdict_exit_fails_without_retry_and_pushes_the_result(
        kube_settings: settings_mod.Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    error, ti = _run_kubernetes(kube_settings, monkeypatch, VERDICT_EXIT_CODE)
    assert isinstance(error, AirflowFailException), repr(error)
    assert "drop rejected: 1 corrupted file" in str(error) and "exited with code 2" in str(error)
    assert ti.pushed["return_value"]["status"] == "rejected"


@pytest.mark.parametrize("exit_code", [1, 137])
def test_kubernetes_other_exit_code_is_retryable(kube_settings: settings_mod.Settings,
                                                 monkeypatch: pytest.MonkeyPatch, exit_code: int) -> None:
    error, ti = _run_kubernetes(kube_settings, monkeypatch, exit_code)
    assert isinstance(error, AirflowException) and not isinstance(error, AirflowFailException), repr(error)
    assert "returned a failure" in str(error)
    assert ti.pushed["return_value"]["status"] == "rejected"


def test_container_exit_code_reads_the_terminated_state() -> None:
    from kubernetes.client import models as k8s

    from llmops.launch.kubernetes_pod import container_exit_code

    def status(name: str, state: k8s.V1ContainerState) -> k8s.V1ContainerStatus:
        return k8s.V1ContainerStatus(name=name, state=state, ready=False, restart_count=0, image="x", image_id="x")

    pod = k8s.V1Pod(status=k8s.V1PodStatus(container_statuses=[
        status("xcom-sidecar", k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())),
        status("base", k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=2)))]))
    assert container_exit_code(pod, "base") == 2
    assert container_exit_code(pod, "xcom-sidecar") is None
    assert container_exit_code(k8s.V1Pod(), "base") is None
    assert container_exit_code(None, "base") is None
