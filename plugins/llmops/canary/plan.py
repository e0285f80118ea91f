"""The canary stage's pod job (embedded/nginx mode): two vLLM sidecars and the canary controller.

One pod: ``vllm-stable`` serves the champion on ``$(STABLE_PORT)``, ``vllm-canary`` serves the
candidate on ``$(CANARY_PORT)``, both under the same served model name so the proxy in front
of them is transparent to clients; the main container is the controller
(``python -m llmops.jobs.canary``), which runs nginx between them and replays traffic.

In the cluster the stable and canary servers are long-lived Deployments behind a Gateway and
the controller alone runs as a job with ``--router gateway``; this pod is the embedded form.

Pure: builds :mod:`llmops.core.podjob` data; no Airflow, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

from llmops.canary.analysis import CanarySpec
from llmops.config.settings import Settings
from llmops.core.hardware import HardwareClass
from llmops.core.job_container import MLFLOW_URI_TEMPLATE, jobs_container
from llmops.core.podjob import Container, PodJob
from llmops.serving.vllm import (
    GPU_STARTUP_BUDGET_S,
    HARDWARE_CLASS_LABEL,
    SCRATCH_MOUNT,
    scheduling_for,
    serving_volumes,
    vllm_sidecar,
    vllm_startup_budget_s,
)
from llmops.serving.vllm_args import (
    managed_flags,
    override_args,
)

STABLE_CONTAINER = "vllm-stable"
CANARY_CONTAINER = "vllm-canary"
STABLE_PORT_ENV = "STABLE_PORT"
CANARY_PORT_ENV = "CANARY_PORT"
STABLE_PORT = 8000
CANARY_PORT = 8001
NGINX_WORK_DIR = f"{SCRATCH_MOUNT}/canary-nginx"
DEFAULT_EVALSET = "include/evalsets/synthetic_chat_v1.yaml"
CANARY_STAGE_LABEL = "llmops.io/stage"

def canary_pod_job(settings: Settings, hw: HardwareClass, *, stable_model_path: str, canary_model_path: str,
                   served_model_name: str, spec: Mapping[str, object] | str, stable_image: str, canary_image: str,
                   name: str = "canary",
                   evalset: str = DEFAULT_EVALSET, experiment: str = "llmops-canary", model_stable: str = "",
                   model_canary: str = "", tags: Mapping[str, str] | None = None,
                   canary_extra_args: Sequence[str] = (), concurrency: int = 4, max_tokens: int = 32,
                   max_requests_per_window: int = 0, quality_sample_rate: float = 1.0,
                   from_step: int | str = 0, failures_so_far: int | str = 0, stop_before_last_step: bool = False,
                   exit_zero_on_rollback: bool = False,
                   labels: Mapping[str, str] | None = None, timeout_s: int | None = None,
                   mlflow_tracking_uri: str = MLFLOW_URI_TEMPLATE) -> PodJob:
    """The canary pod for ``hw``: stable and canary vLLM sidecars, the controller as the main container.

    ``spec`` is a :class:`~llmops.canary.analysis.CanarySpec` dict (validated here) or a Jinja template
    string rendering to its JSON (validated by the job at run time). ``canary_extra_args`` are
    ``vllm serve`` flags for the canary only; a flag already set from the hardware class is
    replaced, not repeated (e.g. ``["--max-model-len", "16"]`` injects a config regression).
    ``from_step``/``failures_so_far`` may be templates (the resumed run after an approval).
    ``timeout_s`` defaults to both servers' start-up budget plus the worst-case observation time.
    ``stable_image``/``canary_image`` are the runtimes each version is pinned to: each server
    runs its own version's pin, so the canary compares exactly what would serve.
    """
    spec_json, spec_obj = _spec_json(spec)
    stable = _sidecar(hw, stable_image, stable_model_path, served_model_name, STABLE_CONTAINER, STABLE_PORT_ENV)
    canary = _sidecar(hw, canary_image, canary_model_path, served_model_name, CANARY_CONTAINER, CANARY_PORT_ENV)
    if canary_extra_args:
        canary = replace(canary, args=override_args(canary.args, canary_extra_args,
                                                    managed=managed_flags(canary.args, hw)))
    args = ["--router", "nginx",
            "--stable-url", f"http://127.0.0.1:$({STABLE_PORT_ENV})",
            "--canary-url", f"http://127.0.0.1:$({CANARY_PORT_ENV})",
            "--work-dir", NGINX_WORK_DIR,
            *controller_args(hw, spec_json, evalset=evalset, served_model_name=served_model_name,
                             model_stable=model_stable, model_canary=model_canary, experiment=experiment,
                             concurrency=concurrency, max_tokens=max_tokens,
                             max_requests_per_window=max_requests_per_window,
                             quality_sample_rate=quality_sample_rate, from_step=from_step,
                             failures_so_far=failures_so_far, stop_before_last_step=stop_before_last_step,
                             exit_zero_on_rollback=exit_zero_on_rollback, tags=tags)]
    main = jobs_container(settings, "canary", args, mlflow_tracking_uri=mlflow_tracking_uri,
                          env={"LLMOPS_HARDWARE_CLASS": hw.name, "LLMOPS_HARDWARE_CONFIG_HASH": hw.config_hash})
    job = PodJob(
        name=name,
        main=main,
        sidecars=(stable, canary),
        ports={STABLE_PORT_ENV: STABLE_PORT, CANARY_PORT_ENV: CANARY_PORT},
        volumes=serving_volumes(hw),
        scheduling=scheduling_for(hw),
        labels={HARDWARE_CLASS_LABEL: hw.name, CANARY_STAGE_LABEL: "canary", **(labels or {})},
        timeout_s=timeout_s or default_timeout_s(hw, spec_obj),
    )
    job.validate()
    return job


def canary_controller_job(settings: Settings, hw: HardwareClass, *, route_args: Sequence[str],
                          served_model_name: str, spec: Mapping[str, object] | str, name: str = "canary",
                          evalset: str = DEFAULT_EVALSET, experiment: str = "llmops-canary",
                          model_stable: str = "", model_canary: str = "", tags: Mapping[str, str] | None = None,
                          from_step: int | str = 0, failures_so_far: int | str = 0,
                          stop_before_last_step: bool = False, exit_zero_on_rollback: bool = False,
                          mlflow_tracking_uri: str = MLFLOW_URI_TEMPLATE) -> PodJob:
    """Gateway mode: the controller alone, shifting a model's HTTPRoute weights between its
    long-lived stable and canary Deployments (``route_args``: ServingRoute.controller_args()).

    It needs no GPU and no sidecar: the servers are the Deployments; it runs on CPU nodes.
    """
    spec_json, spec_obj = _spec_json(spec)
    args = [*route_args,
            *controller_args(hw, spec_json, evalset=evalset, served_model_name=served_model_name,
                             model_stable=model_stable, model_canary=model_canary, experiment=experiment,
                             from_step=from_step, failures_so_far=failures_so_far,
                             stop_before_last_step=stop_before_last_step,
                             exit_zero_on_rollback=exit_zero_on_rollback, tags=tags)]
    main = jobs_container(settings, "canary", args, mlflow_tracking_uri=mlflow_tracking_uri,
                          env={"LLMOPS_HARDWARE_CLASS": hw.name, "LLMOPS_HARDWARE_CONFIG_HASH": hw.config_hash})
    observe = 3600 if spec_obj is None else default_timeout_s(hw, spec_obj) - 2 * GPU_STARTUP_BUDGET_S
    job = PodJob(name=name, main=main, labels={CANARY_STAGE_LABEL: "canary"}, timeout_s=max(600, observe),
                 kubernetes_api=True)
    job.validate()
    return job


def controller_args(hw: HardwareClass, spec_json: str, *, evalset: str, served_model_name: str, model_stable: str,
                    model_canary: str, experiment: str, concurrency: int = 4, max_tokens: int = 32,
                    max_requests_per_window: int = 0, quality_sample_rate: float = 1.0,
                    from_step: int | str = 0, failures_so_far: int | str = 0, stop_before_last_step: bool = False,
                    exit_zero_on_rollback: bool = False, tags: Mapping[str, str] | None = None) -> list[str]:
    """The canary controller's flags that do not depend on the router."""
    args = ["--spec", spec_json, "--evalset", evalset, "--served-model", served_model_name,
            "--model-stable", model_stable, "--model-canary", model_canary, "--experiment", experiment,
            "--concurrency", str(concurrency), "--max-tokens", str(max_tokens),
            "--max-requests-per-window", str(max_requests_per_window),
            "--quality-sample-rate", f"{quality_sample_rate:g}",
            "--from-step", str(from_step), "--failures-so-far", str(failures_so_far),
            "--tag", f"hardware_class={hw.name}", "--tag", f"hardware_config_hash={hw.config_hash}"]
    if stop_before_last_step:
        args.append("--stop-before-last-step")
    if exit_zero_on_rollback:
        args.append("--exit-zero-on-rollback")
    for key, value in (tags or {}).items():
        args += ["--tag", f"{key}={value}"]
    return args


CANARY_MAX_STEPS = 10
"""Most traffic steps a canary may have (the model_refresh Param ``canary_steps``)."""
CANARY_MAX_WINDOW_S = 3600
"""Longest observation window of one step (the Param ``canary_window_s``)."""
CANARY_MAX_FAILURE_LIMIT = 10
"""Highest failure limit (the Param ``canary_failure_limit``)."""


CANARY_SERVERS = 2
"""vLLM servers in an embedded (nginx) canary pod: stable and canary, each with the class's GPUs."""


def canary_pool_kwargs(hw: HardwareClass, router: str) -> dict[str, object]:
    """Airflow ``pool``/``pool_slots`` of the canary task: the GPUs its pod requests.

    nginx (the embedded canary pod): two servers, each with ``gpu.count`` GPUs, so twice the
    class's slots on a GPU class. A CPU class's pool rations the machine, not GPUs: one slot,
    so a one-slot CPU pool still runs it. gateway: the pod is the controller alone (the servers
    are the long-lived Deployments), no GPU, no pool. Refuses a pool too small to ever run it.
    """
    if router == "gateway":
        return {}
    slots = CANARY_SERVERS * hw.gpu.count if hw.gpu.count else hw.pool_slots
    if slots > hw.pool.slots:
        raise ValueError(f"include/hardware_configs/{hw.name}.yaml: pool.slots is {hw.pool.slots}, but the canary "
                         f"pod requests {slots} GPUs ({CANARY_SERVERS} servers x {hw.gpu.count}); fix: set "
                         f"pool.slots to at least {slots}, or serve canaries on another class "
                         f"(LLMOPS_DEFAULT_HARDWARE_CLASS)")
    return {"pool": hw.pool.name, "pool_slots": slots}


def max_timeout_s(hw: HardwareClass) -> int:
    """The longest deadline a canary pod on ``hw`` can get within the Params' bounds: what the
    canary task's ``execution_timeout`` must allow (each pod's own deadline is its spec's)."""
    from llmops.canary.analysis import CanarySpec

    weights = [round(100 * (i + 1) / CANARY_MAX_STEPS) for i in range(CANARY_MAX_STEPS)]
    spec = CanarySpec.from_dict({"steps": [{"weight": w, "window_s": float(CANARY_MAX_WINDOW_S)} for w in weights],
                                 "failure_limit": CANARY_MAX_FAILURE_LIMIT})
    return default_timeout_s(hw, spec)


def default_timeout_s(hw: HardwareClass, spec: CanarySpec | None) -> int:
    """Both servers' start-up budget (they start one after the other) plus the worst-case windows.

    Worst case: every step observed once, plus ``failure_limit x max_holds`` repeated windows
    of the longest step, plus 10 minutes of margin. Unknown spec (a template): one hour more.
    """
    startup = 2 * vllm_startup_budget_s(hw)
    if spec is None:
        return startup + 3600
    longest = max(step.window_s for step in spec.steps)
    observe = sum(step.window_s for step in spec.steps) + longest * spec.failure_limit * spec.max_holds
    return int(startup + observe + 600)


def _sidecar(hw: HardwareClass, image: str, model_path: str, served_model_name: str, container: str,
             port_env: str) -> Container:
    # Each server gets its own cache folders: two vLLM processes must not share a compile cache.
    sidecar = vllm_sidecar(hw, model_path, served_model_name, image, port_env,
                           scratch_dir=f"{SCRATCH_MOUNT}/{container}")
    return replace(sidecar, name=container)


def _spec_json(spec: Mapping[str, object] | str) -> tuple[str, CanarySpec | None]:
    if isinstance(spec, str):
        return spec, None  # a template, rendered by Airflow and validated by the job
    parsed = CanarySpec.from_dict(spec)
    return json.dumps(parsed.to_dict(), separators=(",", ":")), parsed
