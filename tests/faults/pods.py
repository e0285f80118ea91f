"""A local pod run in a background thread, so a test can inject a fault while it runs.

:class:`PodThread` runs a pod job with the local launcher (``LocalPodRunner``, exactly as the
``LocalPodOperator`` does), keeps every log line the launcher streams, and lets the test wait for a
line (e.g. the eval job reporting the server healthy) before it kills a container.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from llmops.config.settings import Settings
from llmops.core.podjob import PodJob
from llmops.launch.local import LocalPodRunner, PodFailed


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class PodThread:
    """``LocalPodRunner(settings).run(job, workdir)`` in a thread; its outcome once :meth:`join` ed."""

    def __init__(self, settings: Settings, job: PodJob | dict[str, Any], workdir: Path) -> None:
        self.job = job if isinstance(job, PodJob) else PodJob.from_dict(job)
        self.workdir = workdir
        self._lines = _Lines()
        log = logging.getLogger(f"faults.pod.{workdir.name}.{id(self)}")
        log.setLevel(logging.DEBUG)
        log.addHandler(self._lines)
        self.runner = LocalPodRunner(settings, log=log)
        self.result: Any = None
        self.failure: PodFailed | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"pod-{workdir.name}", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.runner.run(self.job, self.workdir).xcom
        except PodFailed as exc:
            self.failure = exc
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def start(self) -> PodThread:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def lines(self) -> list[str]:
        return list(self._lines.lines)

    def wait_for(self, pattern: str, timeout_s: float = 600) -> str:
        """The first streamed log line matching ``pattern`` (a regex), waiting for it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            lines = self.lines
            for line in lines[seen:]:
                if regex.search(line):
                    return line
            seen = len(lines)
            if not self.running:
                raise AssertionError(f"the pod ended before a line matched {pattern!r}: "
                                     f"{self.failure or self.error or 'exit 0'}\n" + "\n".join(lines[-40:]))
            time.sleep(0.2)
        raise TimeoutError(f"no log line matched {pattern!r} within {timeout_s:.0f}s\n" + "\n".join(self.lines[-40:]))

    def join(self, timeout_s: float = 900) -> PodThread:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"pod {self.job.name} still running after {timeout_s:.0f}s")
        if self.error is not None:
            raise self.error
        return self
