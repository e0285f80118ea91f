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
from llmops.core.podjob import Container, PodJob, literal
from llmops.serving.vllm import (
    CPU_STARTUP_BUDGET_S,
    GPU_STARTUP_BUDGET_S,
    HARDWARE_CLASS_LABEL,
    SCRATCH_MOUNT,
    scheduling_for,
    serving_volumes,
    vllm_sidecar,
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
                   served_model_name: str, spec: Mapping[str, object] | str, name: str = "canary",
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
    """
    spec_json, spec_obj = _spec_json(spec)
    stable = _sidecar(hw, settings, stable_model_path, served_model_name, STABLE_CONTAINER, STABLE_PORT_ENV)
    canary = _sidecar(hw, settings, canary_model_path, served_model_name, CANARY_CONTAINER, CANARY_PORT_ENV)
    if canary_extra_args:
        canary = replace(canary, args=override_args(canary.args, canary_extra_args))
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


def default_timeout_s(hw: HardwareClass, spec: CanarySpec | None) -> int:
    """Both servers' start-up budget (they start one after the other) plus the worst-case windows.

    Worst case: every step observed once, plus ``failure_limit x max_holds`` repeated windows
    of the longest step, plus 10 minutes of margin. Unknown spec (a template): one hour more.
    """
    startup = 2 * (GPU_STARTUP_BUDGET_S if hw.gpu.count else CPU_STARTUP_BUDGET_S)
    if spec is None:
        return startup + 3600
    longest = max(step.window_s for step in spec.steps)
    observe = sum(step.window_s for step in spec.steps) + longest * spec.failure_limit * spec.max_holds
    return int(startup + observe + 600)


def override_args(args: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    """``args`` with each ``--flag [value]`` of ``extra`` replacing the same flag, or appended.

    Both ``--flag value`` and ``--flag=value`` forms are understood; a flag not followed by a
    value (``--enforce-eager``) is a switch. ``extra`` comes from a user (a DAG param): each of
    its tokens reaches the container as a :func:`~llmops.core.podjob.literal`, never expanded.
    """
    result = list(args)
    for flag, value in _flags(extra):
        position = _find_flag(result, literal(flag))
        new = [literal(flag)] + ([literal(value)] if value is not None else [])
        if position is None:
            result += new
            continue
        start, length = position
        result[start:start + length] = new
    return tuple(result)


def _flags(extra: Sequence[str]) -> list[tuple[str, str | None]]:
    flags: list[tuple[str, str | None]] = []
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("-"):
            raise ValueError(f"canary_extra_args: {token!r} is not a flag; pass [\"--flag\", \"value\", ...]")
        if "=" in token:
            flag, value = token.split("=", 1)
            flags.append((flag, value))
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            flags.append((token, extra[i + 1]))
            i += 2
        else:
            flags.append((token, None))
            i += 1
    return flags


def _find_flag(args: list[str], flag: str) -> tuple[int, int] | None:
    """(position, tokens taken) of ``flag`` in ``args``."""
    for i, token in enumerate(args):
        if token == flag:
            takes_value = i + 1 < len(args) and not args[i + 1].startswith("--")
            return i, 2 if takes_value else 1
        if token.startswith(flag + "="):
            return i, 1
    return None


def _sidecar(hw: HardwareClass, settings: Settings, model_path: str, served_model_name: str, container: str,
             port_env: str) -> Container:
    # Each server gets its own cache folders: two vLLM processes must not share a compile cache.
    sidecar = vllm_sidecar(hw, model_path, served_model_name, settings.vllm_image, port_env,
                           scratch_dir=f"{SCRATCH_MOUNT}/{container}")
    return replace(sidecar, name=container)


def _spec_json(spec: Mapping[str, object] | str) -> tuple[str, CanarySpec | None]:
    if isinstance(spec, str):
        return spec, None  # a template, rendered by Airflow and validated by the job
    parsed = CanarySpec.from_dict(spec)
    return json.dumps(parsed.to_dict(), separators=(",", ":")), parsed
