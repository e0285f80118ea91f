"""The Airflow operator of the ``local`` launcher (see :mod:`llmops.launch.local`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from llmops.config import settings as settings_mod
from llmops.core.podjob import VERDICT_EXIT_CODE, PodJob
from llmops.launch.local import LocalPodRunner, PodFailed

XCOM_RETURN_KEY = "return_value"


class LocalPodOperator(BaseOperator):
    """Run a pod job as local processes; its ``return.json`` becomes the task's XCom.

    Same contract as ``KubernetesPodOperator``: a non-zero exit code fails the
    task, sidecars are stopped afterwards, and the pod job (a dict) is templated.
    A failed job's ``return.json`` is still pushed as the task's XCom (downstream teardown
    tasks read why). The main container exiting with ``VERDICT_EXIT_CODE`` (the input is
    wrong) fails the task without retries (``AirflowFailException``); any other failure
    raises :class:`llmops.launch.local.PodFailed`, which Airflow retries.
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
        try:
            result = self._runner.run(job, self._workdir(settings, context), do_xcom_push=self.do_xcom_push)
        except PodFailed as failed:
            if self.do_xcom_push and failed.xcom is not None:
                self._push_result(context["ti"], failed.xcom)
            if failed.container == job.main.name and failed.exit_code == VERDICT_EXIT_CODE:
                raise AirflowFailException(str(failed)) from failed  # a verdict: retrying cannot change it
            raise
        return result.xcom

    def _push_result(self, ti: Any, value: Any) -> None:
        """Push a failed job's result as the task runner pushes a returned one (with
        ``multiple_outputs``, each key too), as the KubernetesPodOperator does on failure."""
        if self.multiple_outputs and isinstance(value, Mapping):
            for key, item in value.items():
                ti.xcom_push(key=str(key), value=item)
        ti.xcom_push(key=XCOM_RETURN_KEY, value=value)

    def on_kill(self) -> None:
        if self._runner is not None:
            self._runner.kill()

    def _workdir(self, settings: settings_mod.Settings, context: Any) -> Path:
        ti = context["ti"]
        parts = [ti.dag_id, ti.run_id, ti.task_id if ti.map_index < 0 else f"{ti.task_id}-{ti.map_index}",
                 f"try-{ti.try_number}"]
        return settings.pods_dir.joinpath(*(re.sub(r"[^A-Za-z0-9_.-]", "_", str(p)) for p in parts))
