"""The ``kubernetes`` launcher: a pod job as a ``KubernetesPodOperator`` pod.

The operator carries the pod job as a templated dict (``PodJob.to_dict()``). Airflow renders
Jinja anywhere in it before the task runs; only then is the pod built from it, so
``{{ params.model }}`` or ``{{ ti.xcom_pull(...) }}`` in an arg reaches the pod rendered, and
the rendered job is validated again (``PodJob.from_dict``).

What the pod gets from the job:

* the main container is KPO's ``base`` container (its logs are the task log, its exit code the
  task's result, ``/airflow/xcom/return.json`` its XCom);
* sidecars are native sidecars: init containers with ``restartPolicy: Always`` and a
  startupProbe (the kubelet starts ``base`` only once it passes) plus a readinessProbe, both
  HTTP GET on the port named by the probe;
* every pod port is an env var in every container, so ``$(VLLM_PORT)`` in commands, args and
  env values is left for the kubelet to expand;
* GPUs are requested and limited as ``nvidia.com/gpu``; node selector and tolerations come
  from the hardware class; ``model_cache`` is a PVC, ``shm`` a memory-backed emptyDir with a
  size limit, ``scratch`` an emptyDir; ``secret_env`` is ``valueFrom.secretKeyRef``;
* every container runs with the ``restricted`` Pod Security Standard's securityContext.

Images must be pinned by digest: what ran must be exactly what was tested, and a tag can move
under a deployment. The launcher refuses anything else, naming the setting to change.

Parse time: this module is what a DAG file imports under ``LLMOPS_LAUNCHER=kubernetes``, and
the dag-processor re-parses every file in a fresh process. Importing the provider's
``KubernetesPodOperator`` and the Kubernetes client costs about 2.4 s, so nothing here imports
them: :class:`PodJobKubernetesOperator` is a plain ``BaseOperator`` that builds the real
``KubernetesPodOperator`` from the rendered pod job in ``execute`` (see
:mod:`llmops.launch.kubernetes_pod`) and hands it execute, on_kill and deferral resumption.
``bench/dag_parse.py`` measures it against the local launcher.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from llmops.config import settings as settings_mod
from llmops.config.images import image_repository
from llmops.core.podjob import PodJob
from llmops.launch.pod_policy import MODEL_CACHE_CLAIM, refuse_unpinned_images

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

@functools.cache
def _base_operator_params() -> frozenset[str]:
    """The keyword arguments ``BaseOperator`` itself takes (task_id, retries, pool, ...)."""
    return frozenset(name for name, param in inspect.signature(BaseOperator.__init__).parameters.items()
                     if param.kind is not inspect.Parameter.VAR_KEYWORD and name != "self")


def split_operator_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` for :class:`PodJobKubernetesOperator`: its own and ``BaseOperator``'s as they are,
    the rest (``namespace``, ``labels``, ``on_finish_action``...) under ``kubernetes_kwargs``.

    Needed for mapped tasks only (``partial()`` accepts just the arguments the operator class
    declares); the constructor does the same split itself.
    """
    own = _base_operator_params() | {"pod_job", "model_cache_claim", "kubernetes_kwargs"}
    split = {name: value for name, value in kwargs.items() if name in own}
    extra = {name: value for name, value in kwargs.items() if name not in own}
    if extra:
        split["kubernetes_kwargs"] = {**(split.get("kubernetes_kwargs") or {}), **extra}
    return split


class PodJobKubernetesOperator(BaseOperator):
    """Runs a (templated) pod job dict as a ``KubernetesPodOperator`` pod.

    Cheap to create at DAG parse time: the ``KubernetesPodOperator`` is built in ``execute``
    from the *rendered* pod job (:func:`llmops.launch.kubernetes_pod.build_pod_operator`), and
    does the work: its ``execute`` (logs, exit code, ``return.json`` as XCom), ``on_kill``
    and, when deferrable, its resumption from the trigger. A main container exiting with
    ``VERDICT_EXIT_CODE`` fails the task without retries; the XCom and failure message are
    redacted (:class:`llmops.launch.kubernetes_pod.PodJobPodOperator`).

    ``pod_job`` is ``PodJob.to_dict()``, the only template field of this operator. Arguments
    ``BaseOperator`` takes (retries, pool, pool_slots, execution_timeout, do_xcom_push, ...)
    are this task's; any other argument, or ``kubernetes_kwargs`` (the way to pass them to
    ``partial()``), goes to the ``KubernetesPodOperator``, whose own template fields
    (``namespace``, ``labels``, ...) it renders at run time. Defaults that the pod job contract
    implies (namespace and service account from settings, XCom push, security contexts,
    start-up timeout) can be overridden that way. The KPO checks those arguments when it is
    built: tests render the pod of every pod-job task (``tests/dags/test_pod_specs.py``).
    """

    template_fields: Sequence[str] = ("pod_job",)
    template_fields_renderers = {"pod_job": "json"}
    ui_color = "#e8f4fd"

    def __init__(self, *, pod_job: dict[str, Any], model_cache_claim: str = MODEL_CACHE_CLAIM,
                 kubernetes_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        split = split_operator_kwargs(kwargs)
        kubernetes = {**(kubernetes_kwargs or {}), **split.pop("kubernetes_kwargs", {})}
        super().__init__(**split)
        settings = settings_mod.load()
        kubernetes.setdefault("namespace", settings.namespace)
        kubernetes.setdefault("service_account_name", settings.service_account)
        # Jobs talk to MLflow and S3, not to the Kubernetes API (XCom is read by exec from
        # the worker), so the pod gets no API token unless a task asks for one.
        kubernetes.setdefault("automount_service_account_token", False)
        # A crash without a termination message still shows its last log lines in the error.
        kubernetes.setdefault("termination_message_policy", "FallbackToLogsOnError")
        self.pod_job = pod_job
        self.model_cache_claim = model_cache_claim
        self.kubernetes_kwargs = kubernetes
        self.image_settings = {
            image_repository(settings.jobs_image): "LLMOPS_JOBS_IMAGE",
            image_repository(settings.vllm_image): "LLMOPS_VLLM_IMAGE",
        }
        self._pod_operator: KubernetesPodOperator | None = None
        # Fail at DAG parse time where the image is known then; templated images are checked
        # again once rendered.
        refuse_unpinned_images(pod_job, self.image_settings, skip_templated=True)

    def kubernetes_operator(self, context: Mapping[str, Any] | None = None) -> KubernetesPodOperator:
        """The ``KubernetesPodOperator`` for the pod job as it is now (render it first).

        With ``context`` the KPO's own template fields are rendered with it.
        """
        from llmops.launch.kubernetes_pod import build_pod_operator

        return build_pod_operator(self, context)

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """The pod this task creates, as ``KubernetesPodOperator.build_pod_request_obj`` builds it.

        ``dry_run=True`` needs no cluster (no kube config, no in-cluster check).
        """
        return self.kubernetes_operator(context).build_pod_request_obj(context, dry_run=dry_run)

    def execute(self, context: Any) -> Any:
        self._pod_operator = self.kubernetes_operator(context)
        return _run_execute(self._pod_operator, context)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        """Deferrable mode: the KPO deferred to its trigger; a fresh one resumes (``trigger_reentry``)."""
        if next_method == "__fail__":  # the trigger failed: BaseOperator raises its error
            return super().resume_execution(next_method, next_kwargs, context)
        self._pod_operator = self.kubernetes_operator(context)
        return self._pod_operator.resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        if self._pod_operator is not None:
            self._pod_operator.on_kill()


def _run_execute(operator: BaseOperator, context: Any) -> Any:
    """``operator.execute(context)`` from inside this task's ``execute``, as the task runner calls it.

    Airflow warns when an operator's ``execute`` is called by anything but the task runner
    (nested operators); here the nesting is the design, so pass the runner's marker on.
    """
    try:
        from airflow.sdk.bases.operator import ExecutorSafeguard
    except ImportError:  # pragma: no cover - another Airflow: a warning in the log at worst
        return operator.execute(context)
    marker = {f"{type(operator).__name__}__sentinel": ExecutorSafeguard.sentinel_value}
    return operator.execute(context, **marker)


def render_pod_manifest(operator: PodJobKubernetesOperator,
                        context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pod ``operator`` would create, as a camelCase manifest dict, without a cluster.

    With ``context`` (at least ``params``, or a full task context) the template fields are
    rendered first, as Airflow does before ``execute``; rendering is in place and final.
    """
    from llmops.launch.kubernetes_pod import manifest

    if context is not None:
        operator.render_template_fields(dict(context))  # type: ignore[arg-type]
    kubernetes_operator = operator.kubernetes_operator(dict(context) if context is not None else None)
    # Task-instance labels need a real task instance; a test context has none.
    ti_context = context if context is not None and "ti" in context else None
    return manifest(kubernetes_operator.build_pod_request_obj(ti_context, dry_run=True))


def make_kubernetes_task(pod_job: PodJob, task_id: str, **operator_kwargs: Any) -> PodJobKubernetesOperator:
    """The Airflow task running ``pod_job`` on Kubernetes (``operator_kwargs`` go to the operator)."""
    pod_job.validate()
    return PodJobKubernetesOperator(task_id=task_id, pod_job=pod_job.to_dict(), **operator_kwargs)


def mapped_kubernetes_task(*, task_id: str, pod_jobs: Any, **partial_kwargs: Any) -> Any:
    """One task instance per pod-job dict in ``pod_jobs`` (an XComArg), on Kubernetes."""
    kwargs = split_operator_kwargs({"task_id": task_id, **partial_kwargs})
    return PodJobKubernetesOperator.partial(**kwargs).expand(pod_job=pod_jobs)
