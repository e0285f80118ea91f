"""The Airflow operator of the ``local`` launcher (see :mod:`llmops.launch.local`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from llmops.config import settings as settings_mod
from llmops.core.podjob import PodJob
from llmops.launch.local import LocalPodRunner


class LocalPodOperator(BaseOperator):
    """Run a pod job as local processes; its ``return.json`` becomes the task's XCom.

    Same contract as ``KubernetesPodOperator``: a non-zero exit code fails the
    task, sidecars are stopped afterwards, and the pod job (a dict) is templated.
    """

    template_fields = ("pod_job",)
    ui_color = "#d6eaf8"

    def __init__(self, *, pod_job: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pod_job = pod_job
        self._runner: LocalPodRunner | None = None

    def execute(self, context: Any) -> Any:
        job = PodJob.from_dict(self.pod_job)
        settings = settings_mod.load()
        self._runner = LocalPodRunner(settings, log=self.log)
        result = self._runner.run(job, self._workdir(settings, context), do_xcom_push=self.do_xcom_push)
        return result.xcom

    def on_kill(self) -> None:
        if self._runner is not None:
            self._runner.kill()

    def _workdir(self, settings: settings_mod.Settings, context: Any) -> Path:
        ti = context["ti"]
        parts = [ti.dag_id, ti.run_id, ti.task_id if ti.map_index < 0 else f"{ti.task_id}-{ti.map_index}",
                 f"try-{ti.try_number}"]
        return settings.pods_dir.joinpath(*(re.sub(r"[^A-Za-z0-9_.-]", "_", str(p)) for p in parts))
