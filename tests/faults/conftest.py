"""The fault suite's set-up: the embedded platform, a job runner, and the table of faults.

Each case injects one fault into a real run on the embedded platform, asserts the final state
(nothing lost, nothing duplicated) and records ``(fault, outcome, time to recover)`` through the
``fault`` fixture. At the end of the session the table is printed and written as Markdown to
``test-artifacts/fault_table.md``. Times are measured with ``time.monotonic`` and only reported,
never asserted.

The platform is the integration suite's fixture, imported (one definition). The suite takes its
own instance, under its own folder (``session_dir`` below): its faults stop and cut services,
which must not leak into the other suites' platform.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import models_dir, platform, publish, vllm_runtime  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]
TABLE_PATH = ROOT / "test-artifacts" / "fault_table.md"
EXPERIMENT = "llmops-fault-tests"
# A jobs image reference as drops carry it (pinned by digest); what it names is not run here.
IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "fa" * 32
# MLflow client retries that give up in seconds, so an outage fails the attempt (the client's
# defaults retry for about four minutes: 7 retries, backoff factor 2).
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@pytest.fixture(scope="session")
def session_dir(session_dir: Path) -> Path:
    """The fault suite's folder inside the test session's (its platform lives in ``platform/`` there)."""
    path = session_dir / "faults"
    path.mkdir(exist_ok=True)
    return path


# -- the table -----------------------------------------------------------------------------------


@dataclass
class FaultRecord:
    """One case: the fault, what became of the run, and when (``time.monotonic``)."""

    case: str
    fault: str
    outcome: str = "not reached"
    injected: float | None = None
    removed: float | None = None
    recovered: float | None = None
    notes: list[str] = field(default_factory=list)

    def inject(self) -> float:
        """Mark the fault injected now (or pass the time it was, e.g. a proxy's outage start)."""
        self.injected = time.monotonic()
        return self.injected

    def remove(self, at: float | None = None) -> None:
        """Mark the fault removed (the service back), now or at ``at``."""
        self.removed = at if at is not None else time.monotonic()

    def recover(self, outcome: str) -> None:
        """The final correct state is reached now; ``outcome`` says what it is."""
        self.recovered = time.monotonic()
        self.outcome = outcome

    def note(self, text: str) -> None:
        self.notes.append(text)

    @staticmethod
    def _span(start: float | None, end: float | None) -> str:
        return f"{end - start:.1f}" if start is not None and end is not None else "-"

    def row(self) -> list[str]:
        return [self.case, self.fault, self.outcome, self._span(self.injected, self.recovered),
                self._span(self.removed, self.recovered), "; ".join(self.notes)]


HEADER = ["case", "fault", "outcome", "recover from injection (s)", "recover from removal (s)", "notes"]
_RECORDS: list[FaultRecord] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    """Keep each phase's report on the item, so the ``fault`` fixture sees a failed case."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> Iterator[FaultRecord]:
    """The case's record in the session's fault table (a failed case is recorded as failed)."""
    doc = (request.function.__doc__ or request.node.name).strip().splitlines()[0]
    record = FaultRecord(case=request.node.name.removeprefix("test_"), fault=doc)
    yield record
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        message = str(report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash")
                      else report.longrepr).splitlines()[0]
        record.outcome = f"FAILED: {message[:200]}"
        record.recovered = None
    _RECORDS.append(record)


def markdown_table(records: list[FaultRecord]) -> str:
    """The records as a Markdown table (the README's fault table)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(HEADER), line(["---"] * len(HEADER)), *(line(r.row()) for r in records)]) + "\n"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the fault table and write it to ``test-artifacts/fault_table.md``."""
    if not _RECORDS:
        return
    table = markdown_table(_RECORDS)
    terminalreporter.section("fault table (time to recover, measured)")
    terminalreporter.write(table)
    TABLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    TABLE_PATH.write_text("# Fault suite: measured recovery\n\n" + table)
    terminalreporter.write_line(f"written to {TABLE_PATH}")


# -- running jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRun:
    """A finished job: exit status, output and its ``return.json`` (None when it wrote none)."""

    returncode: int
    output: str
    result: dict[str, Any] | None


class Jobs:
    """Runs ``python -m llmops.jobs.<name>`` as a pod's main container would (the platform's env,
    the result folder mapped by ``LLMOPS_XCOM_DIR``), in its own process group so a test can kill
    the whole "pod"."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._count = 0

    def env(self, xcom: Path, extra: dict[str, str] | None) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "LLMOPS_XCOM_DIR": str(xcom),
                "LLMOPS_VLLM_IMAGE": IMAGE, **(extra or {})}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        """Start the job; returns the process (its own group) and its result folder."""
        self._count += 1
        xcom = self.work / f"{self._count:02d}-{name}"
        xcom.mkdir(parents=True)
        proc = subprocess.Popen([sys.executable, "-m", f"llmops.jobs.{name}", *args], env=self.env(xcom, env),
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        return proc, xcom

    @staticmethod
    def finish(proc: subprocess.Popen, xcom: Path, timeout_s: float = 600) -> JobRun:
        output, _ = proc.communicate(timeout=timeout_s)
        path = xcom / "return.json"
        return JobRun(proc.returncode, output, json.loads(path.read_text()) if path.exists() else None)

    @staticmethod
    def await_outage(proxy: Any, proc: subprocess.Popen, xcom: Path, timeout_s: float = 120) -> Any:
        """Wait until ``proxy``'s armed outage fired while ``proc`` runs; fail with its output if it ended."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                return proxy.wait_outage(0.2)
            except TimeoutError:
                if proc.poll() is not None:
                    done = Jobs.finish(proc, xcom)
                    raise AssertionError(f"the job ended (exit {done.returncode}) before the fault was "
                                         f"injected:\n{done.output[-3000:]}") from None
        return proxy.wait_outage(0)

    def run(self, name: str, *args: str, env: dict[str, str] | None = None, timeout_s: float = 600) -> JobRun:
        proc, xcom = self.start(name, *args, env=env)
        return self.finish(proc, xcom, timeout_s)


@pytest.fixture
def jobs(tmp_path: Path) -> Jobs:
    return Jobs(tmp_path / "jobs")


@pytest.fixture
def model_cache() -> Iterator[list[str]]:
    """Model names whose copies in the shared model cache (``LLMOPS_MODELS_DIR``) the test's pods
    fetched; removed afterwards, so fault runs do not pile up there."""
    import shutil

    from llmops.config import settings as settings_mod

    models: list[str] = []
    yield models
    root = settings_mod.load().models_dir
    for model in models:
        shutil.rmtree(root / model, ignore_errors=True)


@pytest.fixture(scope="session")
def buckets(platform) -> tuple[str, str]:  # noqa: F811 (the imported fixture)
    """(drops bucket, models bucket) of the platform."""
    return platform.settings_file.bucket("drops"), platform.settings_file.bucket("models")


@pytest.fixture(scope="session")
def s3(platform) -> Any:  # noqa: F811
    """A client of the platform's S3 endpoint (directly, never through a fault proxy)."""
    from llmops.io import s3 as s3io

    return s3io.client(endpoint_url=platform.endpoints.s3_url)


def receive_and_stage(jobs: Jobs, drop_uri: str, model: str, models_bucket: str) -> dict[str, Any]:
    """Run receive then stage on a published drop, as the refresh DAG does; stage's result."""
    received = jobs.run("receive", "--drop-uri", drop_uri, "--experiment", EXPERIMENT,
                        "--models-bucket", models_bucket)
    assert received.returncode == 0, received.output
    staged = jobs.run("stage", "--drop-uri", drop_uri, "--registered-model", model, "--hardware-classes", "cpu",
                      "--experiment", EXPERIMENT, "--models-bucket", models_bucket,
                      "--source-etags", json.dumps(received.result["etags"]))
    assert staged.returncode == 0, staged.output
    return staged.result
