"""Launchers: turn a pod job into an Airflow task.

``LLMOPS_LAUNCHER`` (see :mod:`llmops.config.settings`) picks the launcher when the DAG
file is parsed: ``kubernetes`` in production, ``local`` on the embedded default.
The pod job is the same in both; only how it is executed changes.

Both are cheap at parse time: the dag-processor parses every DAG file in a fresh process,
so an operator's heavy machinery (the provider's ``KubernetesPodOperator``, the Kubernetes
client) is imported when the task runs, not when the DAG file is parsed.
``bench/dag_parse.py`` (``make bench``) holds both launchers to that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops.config import dag_defaults
from llmops.config import settings as settings_mod

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

    from llmops.core.podjob import PodJob


def pod_job_task(job: PodJob, *, task_id: str, launcher: str | None = None, **operator_kwargs: Any) -> BaseOperator:
    """Build the Airflow task that runs ``job`` with the configured launcher.

    ``operator_kwargs`` go to the operator (retries, pool, pool_slots, ...). The
    pod job is a templated field: Jinja in any of its strings is rendered at run
    time by Airflow, identically for both launchers. The task is bounded by the pod
    job's deadline (``execution_timeout`` = ``timeout_s`` + scheduling overhead).
    """
    job.validate()
    operator_kwargs.setdefault("execution_timeout", dag_defaults.pod_task_timeout(job.timeout_s))
    chosen = launcher or settings_mod.load().launcher
    if chosen == "kubernetes":
        from llmops.launch.kubernetes import make_kubernetes_task

        return make_kubernetes_task(job, task_id=task_id, **operator_kwargs)
    if chosen == "local":
        from llmops.launch.local_operator import LocalPodOperator

        return LocalPodOperator(task_id=task_id, pod_job=job.to_dict(), **operator_kwargs)
    raise settings_mod.SettingsError(f"unknown launcher {chosen!r}: expected one of {settings_mod.LAUNCHERS}")


def mapped_pod_job_task(*, task_id: str, pod_jobs: Any, max_pod_timeout_s: int, launcher: str | None = None,
                        **partial_kwargs: Any) -> Any:
    """One task instance per pod job in ``pod_jobs`` (an XComArg of pod-job dicts, built at run time).

    Dynamic task mapping over whole pod jobs: a planning task decides at run time what to
    run (e.g. candidate and champion on a hardware class). Mapped values come from XCom
    and are not rendered as templates, so planners put final values in them.

    ``max_pod_timeout_s`` is the largest deadline a planned pod job can have (the jobs are only
    known at run time, a task's ``execution_timeout`` at parse time): it bounds every instance.
    """
    partial_kwargs.setdefault("execution_timeout", dag_defaults.pod_task_timeout(max_pod_timeout_s))
    chosen = launcher or settings_mod.load().launcher
    if chosen == "kubernetes":
        from llmops.launch.kubernetes import mapped_kubernetes_task

        return mapped_kubernetes_task(task_id=task_id, pod_jobs=pod_jobs, **partial_kwargs)
    if chosen == "local":
        from llmops.launch.local_operator import LocalPodOperator

        return LocalPodOperator.partial(task_id=task_id, **partial_kwargs).expand(pod_job=pod_jobs)
    raise settings_mod.SettingsError(f"unknown launcher {chosen!r}: expected one of {settings_mod.LAUNCHERS}")
