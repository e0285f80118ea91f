"""Launchers: turn a pod job into an Airflow task.

``LLMOPS_LAUNCHER`` (see :mod:`llmops.settings`) picks the launcher when the DAG
file is parsed: ``kubernetes`` in production, ``local`` on the embedded default.
The pod job is the same in both; only how it is executed changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops import settings as settings_mod

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

    from llmops.pods import PodJob


def pod_job_task(job: PodJob, *, task_id: str, launcher: str | None = None, **operator_kwargs: Any) -> BaseOperator:
    """Build the Airflow task that runs ``job`` with the configured launcher.

    ``operator_kwargs`` go to the operator (retries, pool, pool_slots, ...). The
    pod job is a templated field: Jinja in any of its strings is rendered at run
    time by Airflow, identically for both launchers.
    """
    job.validate()
    chosen = launcher or settings_mod.load().launcher
    if chosen == "kubernetes":
        from llmops.launch.kubernetes import make_kubernetes_task

        return make_kubernetes_task(job, task_id=task_id, **operator_kwargs)
    if chosen == "local":
        from llmops.launch.local_operator import LocalPodOperator

        return LocalPodOperator(task_id=task_id, pod_job=job.to_dict(), **operator_kwargs)
    raise settings_mod.SettingsError(f"unknown launcher {chosen!r}: expected one of {settings_mod.LAUNCHERS}")
