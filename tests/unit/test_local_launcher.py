"""The local launcher runs pod jobs as real processes with pod semantics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmops.config import settings as settings_mod
from llmops.core.podjob import Container, PodJob, PodJobError, Probe, SecretEnv, Volume, expand_env_refs
from llmops.launch.local import LocalPodRunner, PodFailed

PROGRAMS = Path(__file__).parent / "pod_programs"
JOBS_IMAGE = settings_mod.DEFAULT_JOBS_IMAGE


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalPodRunner:
    monkeypatch.setenv("LLMOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LLMOPS_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LLMOPS_SECRETS_DIR", str(tmp_path / "secrets"))
    # The jobs image these pods name, whatever an earlier test (or the shell) configured.
    monkeypatch.setenv("LLMOPS_JOBS_IMAGE", JOBS_IMAGE)
    monkeypatch.delenv("LLMOPS_LOCAL_RUNTIMES", raising=False)
    return LocalPodRunner(settings_mod.load())


def make_job(tmp_path: Path, *, main_env: dict[str, str] | None = None,
             sidecar_env: dict[str, str] | None = None, timeout_s: int = 60,
             secret_env: dict[str, SecretEnv] | None = None, with_sidecar: bool = True) -> PodJob:
    sidecar = Container(
        name="server",
        image=JOBS_IMAGE,
        command=("python", str(PROGRAMS / "sidecar_server.py")),
        env={"WORD": "pong", "PID_FILE": str(tmp_path / "sidecar.pid"), **(sidecar_env or {})},
        readiness_probe=Probe(path="/health", port_env="SIDECAR_PORT", period_s=1, failure_threshold=20),
    )
    main = Container(
        name="job",
        image=JOBS_IMAGE,
        command=("python", str(PROGRAMS / "main_job.py")),
        args=("/scratch/out.txt", "--port=$(SIDECAR_PORT)", "$$(SIDECAR_PORT)"),
        env={"SIDECAR_URL": "http://127.0.0.1:$(SIDECAR_PORT)" if with_sidecar else "",
             "GREETING": "hello $(WHO)", "WHO": "pod",
             **(main_env or {})},
        secret_env=secret_env or {},
    )
    return PodJob(name="test-pod", main=main, sidecars=(sidecar,) if with_sidecar else (),
                  ports={"SIDECAR_PORT": 8000}, volumes=(Volume("scratch", "/scratch", "scratch"),),
                  timeout_s=timeout_s)


def test_sidecar_ready_before_main_and_result_becomes_xcom(runner: LocalPodRunner, tmp_path: Path) -> None:
    job = make_job(tmp_path, sidecar_env={"STARTUP_DELAY_S": "1.5"})
    result = runner.run(job, tmp_path / "pod")
    # The main container reached the sidecar on the port the launcher picked for $(SIDECAR_PORT):
    # it only could because the launcher waited for the readiness probe.
    assert result.xcom["word"] == "pong"
    port = result.xcom["args"][1].removeprefix("--port=")
    assert port.isdigit() and port != "8000"
    # $$ escapes a reference, as the kubelet does.
    assert result.xcom["args"][2] == "$(SIDECAR_PORT)"
    # The scratch volume's mount path was mapped to a folder of this pod.
    assert (tmp_path / "pod" / "volumes" / "scratch" / "out.txt").read_text() == "written"
    assert result.xcom["args"][0] == str(tmp_path / "pod" / "volumes" / "scratch" / "out.txt")
    # Env values are expanded in order ($(WHO) defined after GREETING is not expanded, like Kubernetes).
    assert result.xcom["greeting"] == "hello $(WHO)"
    # The sidecar was stopped after the main container finished.
    sidecar_pid = int((tmp_path / "sidecar.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(sidecar_pid, 0)


def test_failing_main_fails_the_pod_with_exit_code_and_log_tail(runner: LocalPodRunner, tmp_path: Path) -> None:
    with pytest.raises(PodFailed) as failed:
        runner.run(make_job(tmp_path, main_env={"MODE": "fail"}), tmp_path / "pod")
    assert failed.value.exit_code == 4
    assert "exited with code 4" in str(failed.value)
    assert "main failing on purpose" in str(failed.value)
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "sidecar.pid").read_text()), 0)


def test_missing_result_file_fails_like_the_pod_operator(runner: LocalPodRunner, tmp_path: Path) -> None:
    with pytest.raises(PodFailed, match="wrote no /airflow/xcom/return.json"):
        runner.run(make_job(tmp_path, main_env={"MODE": "no-result"}), tmp_path / "pod")
    # Without XCom push a missing result is fine.
    result = runner.run(make_job(tmp_path, main_env={"MODE": "no-result"}), tmp_path / "pod2",
                        do_xcom_push=False)
    assert result.xcom is None


def test_sidecar_that_dies_before_ready_names_itself(runner: LocalPodRunner, tmp_path: Path) -> None:
    with pytest.raises(PodFailed) as failed:
        runner.run(make_job(tmp_path, sidecar_env={"CRASH": "1"}), tmp_path / "pod")
    message = str(failed.value)
    assert "sidecar 'server' exited with code 7" in message
    assert "sidecar crashing on purpose" in message


def test_deadline_stops_a_job_that_runs_too_long(runner: LocalPodRunner, tmp_path: Path) -> None:
    with pytest.raises(PodFailed, match="exceeded its deadline of 3s"):
        runner.run(make_job(tmp_path, main_env={"MODE": "sleep"}, timeout_s=3, with_sidecar=False),
                   tmp_path / "pod")


def test_secret_env_comes_from_the_local_secret_store(runner: LocalPodRunner, tmp_path: Path) -> None:
    job = make_job(tmp_path, secret_env={"TOKEN": SecretEnv(secret="creds", key="token")}, with_sidecar=False)
    with pytest.raises(PodJobError, match=r"secret 'creds' key 'token'.*create .*creds/token"):
        runner.run(job, tmp_path / "pod")
    (tmp_path / "secrets" / "creds").mkdir(parents=True)
    (tmp_path / "secrets" / "creds" / "token").write_text("s3cr3t\n")
    # The container got exactly the secret; what it returns shows it redacted (test_launcher_redaction.py).
    assert runner.run(job, tmp_path / "pod").xcom["secret"] == "***"


def test_unknown_image_names_the_setting_to_fix(runner: LocalPodRunner, tmp_path: Path) -> None:
    job = make_job(tmp_path, with_sidecar=False)
    odd = PodJob(name=job.name, main=Container(name="job", image="example.org/other:1", command=("true",)))
    with pytest.raises(PodJobError, match="LLMOPS_LOCAL_RUNTIMES"):
        runner.run(odd, tmp_path / "pod")


def test_pod_job_round_trips_through_its_dict_form(tmp_path: Path) -> None:
    job = make_job(tmp_path, secret_env={"TOKEN": SecretEnv("creds", "token")})
    assert PodJob.from_dict(job.to_dict()) == job


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("name", {"name": "Bad_Name"}, "DNS label"),
        ("ports", {"ports": {"SIDECAR_PORT": 70000}}, "not a valid env name/port"),
        ("volumes", {"volumes": [{"name": "x", "mount_path": "/airflow/xcom", "kind": "scratch"}]}, "reserved"),
        ("probe", {"ports": {}}, "readiness_probe.port_env 'SIDECAR_PORT' is not one of the pod's ports"),
    ],
)
def test_invalid_pod_jobs_are_refused_with_the_field_named(tmp_path: Path, field: str, change: dict,
                                                           message: str) -> None:
    data = {**make_job(tmp_path).to_dict(), **change}
    with pytest.raises(PodJobError, match=message):
        PodJob.from_dict(data)


def test_env_reference_expansion_matches_kubernetes() -> None:
    env = {"A": "1", "B": "two"}
    assert expand_env_refs("$(A)-$(B)", env) == "1-two"
    assert expand_env_refs("$(MISSING)", env) == "$(MISSING)"
    assert expand_env_refs("$$(A)", env) == "$(A)"
    assert expand_env_refs("cost $$5", env) == "cost $5"


def test_init_containers_run_to_completion_before_sidecars(runner: LocalPodRunner, tmp_path: Path) -> None:
    base = make_job(tmp_path)
    marker = "/scratch/init-done"
    init = Container(name="fetch", image=JOBS_IMAGE,
                     command=("python", "-c", "import sys; open(sys.argv[1], 'w').write('ok')", marker))
    job = PodJob(name=base.name, main=base.main, sidecars=base.sidecars, init_containers=(init,), ports=base.ports,
                 volumes=base.volumes)
    runner.run(job, tmp_path / "pod")
    assert (tmp_path / "pod" / "volumes" / "scratch" / "init-done").read_text() == "ok"

    failing = Container(name="verify", image=JOBS_IMAGE, command=("python", "-c", "print('digest mismatch'); exit(9)"))
    job = PodJob(name=base.name, main=base.main, sidecars=base.sidecars, init_containers=(init, failing),
                 ports=base.ports, volumes=base.volumes)
    (tmp_path / "sidecar.pid").unlink()
    with pytest.raises(PodFailed, match=r"init container 'verify' exited with code 9[^$]*digest mismatch"):
        runner.run(job, tmp_path / "pod")
    assert not (tmp_path / "sidecar.pid").exists(), "the sidecar must not start after a failed init container"
