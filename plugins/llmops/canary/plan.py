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
from typing import Any

from llmops.canary.analysis import CanarySpec
from llmops.config.settings import Settings
from llmops.core.fields import short_repr
from llmops.core.hardware import KNOB_FLAGS, LAUNCHER_FLAGS, HardwareClass
from llmops.core.job_container import MLFLOW_URI_TEMPLATE, jobs_container
from llmops.core.limits import VLLM_EXTRA_ARG_MAX_CHARS, VLLM_EXTRA_ARGS_MAX
from llmops.core.podjob import Container, PodJob, literal
from llmops.serving.vllm import (
    GPU_STARTUP_BUDGET_S,
    HARDWARE_CLASS_LABEL,
    SCRATCH_MOUNT,
    scheduling_for,
    serving_volumes,
    vllm_sidecar,
    vllm_startup_budget_s,
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

_WEIGHTS = "where the weights, tokenizer or chat template come from is pinned by the deployment manifest"
_REACH = "how the server is reached is the launcher's (model name, port, address, auth, TLS)"
MANAGED_VLLM_FLAGS: dict[str, str] = {
    **{flag: f"set by the launcher from {source}" for flag, source in LAUNCHER_FLAGS.items()},
    **dict.fromkeys(("--model", "--tokenizer", "--revision", "--tokenizer-revision", "--code-revision",
                     "--download-dir", "--load-format", "--trust-remote-code", "--hf-config-path", "--hf-token",
                     "--hf-overrides", "--model-loader-extra-config", "--config", "--chat-template",
                     "--speculative-config", "--lora-modules", "--generation-config"),
                    _WEIGHTS),
    **dict.fromkeys(("--served-model-name", "--host", "--port", "--uds", "--api-key", "--root-path",
                     "--ssl-keyfile", "--ssl-certfile", "--ssl-ca-certs", "--ssl-cert-reqs", "--allowed-origins",
                     "--allowed-methods", "--allowed-headers", "--allow-credentials", "--middleware",
                     "--allowed-local-media-path"),
                    _REACH),
    **dict.fromkeys(("--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp", "--data-parallel-size",
                     "-dp", "--data-parallel-size-local", "-dpl"),
                    "the GPUs a server shards over are the hardware class's (gpu.count, tensor_parallel_size)"),
    **dict.fromkeys(("--disable-log-requests", "--enable-log-requests"),
                    "request logging is the platform's (prompts must not reach the logs)"),
}
"""``vllm serve`` flags no user override may set (``canary_vllm_args``, ``vllm_overrides``), with why.

:func:`managed_flags` adds every flag the sidecar builder sets that is not a tuning knob of the
hardware class, so a flag the launcher starts to set later is refused without being listed here.
"""


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


class VllmArgsError(ValueError):
    """Extra ``vllm serve`` flags from a user that cannot be applied; names the flag and the fix."""


def managed_flags(sidecar_args: Sequence[str], hw: HardwareClass) -> dict[str, str]:
    """:data:`MANAGED_VLLM_FLAGS` plus every flag in ``sidecar_args`` (what the sidecar builder set)
    that is neither a tuning knob (:data:`~llmops.core.hardware.KNOB_FLAGS`) nor one of the class's
    own ``vllm.extra_args``: those a canary may change, nothing else the launcher sets."""
    tunable = set(KNOB_FLAGS) | {_flag_name(a) for a in hw.vllm.extra_args if a.startswith("-")}
    derived = {_flag_name(a): "set by the launcher (vllm_sidecar)" for a in sidecar_args
               if a.startswith("-") and _flag_name(a) not in tunable}
    return {**derived, **MANAGED_VLLM_FLAGS}


def check_extra_args(extra: Any, managed: Mapping[str, str] = MANAGED_VLLM_FLAGS,
                     source: str = "canary_extra_args") -> list[tuple[str, str | None]]:
    """The ``(flag, value)`` pairs of ``extra``, or :class:`VllmArgsError` naming the first bad token.

    Refused: more than :data:`~llmops.core.limits.VLLM_EXTRA_ARGS_MAX` tokens, a token longer than
    :data:`~llmops.core.limits.VLLM_EXTRA_ARG_MAX_CHARS`, a token that is not a string, a value
    without a flag, and a flag in ``managed`` in any spelling: ``--flag value``, ``--flag=value``,
    ``--flag_name`` (vLLM reads ``_`` as ``-``) or an abbreviation (argparse expands a unique prefix).
    """
    if isinstance(extra, (str, bytes)) or not isinstance(extra, Sequence):
        raise VllmArgsError(f"{source}: expected a list of strings, got {short_repr(extra)}; "
                            "fix: pass [\"--flag\", \"value\", ...]")
    if len(extra) > VLLM_EXTRA_ARGS_MAX:
        raise VllmArgsError(f"{source}: {len(extra)} tokens, over the limit of {VLLM_EXTRA_ARGS_MAX} "
                            "(llmops.core.limits.VLLM_EXTRA_ARGS_MAX); fix: pass only the flags under test")
    for index, token in enumerate(extra):
        if not isinstance(token, str):
            raise VllmArgsError(f"{source}[{index}]: expected a string, got {short_repr(token)}; "
                                "fix: quote it (\"16\", not 16)")
        if len(token) > VLLM_EXTRA_ARG_MAX_CHARS:
            raise VllmArgsError(f"{source}[{index}]: {len(token)} characters, over the limit of "
                                f"{VLLM_EXTRA_ARG_MAX_CHARS} (llmops.core.limits.VLLM_EXTRA_ARG_MAX_CHARS); "
                                "fix: shorten it")
    flags = _flags(extra, source)
    for flag, _ in flags:
        hit = _managed_hit(flag, managed)
        if hit is not None:
            spelled = "" if hit == _flag_name(flag) else f" (read by vLLM as {hit})"
            raise VllmArgsError(f"{source}: {short_repr(flag)}{spelled} is managed by the platform: {managed[hit]}; "
                                "fix: remove it (change the hardware class or the deployment instead)")
    return flags


def _flag_name(token: str) -> str:
    """``--served_model_name=x`` -> ``--served-model-name`` (vLLM reads ``_`` in a flag as ``-``)."""
    name = token.split("=", 1)[0]
    dashes = len(name) - len(name.lstrip("-"))
    return name[:dashes] + name[dashes:].replace("_", "-")


def _managed_hit(flag: str, managed: Mapping[str, str]) -> str | None:
    name = _flag_name(flag)
    if name in managed:
        return name
    for candidate in managed:
        if candidate.startswith("--") and name.startswith("--") and len(name) > 2 and candidate.startswith(name):
            return candidate  # an abbreviation argparse would expand to the managed flag
        if not candidate.startswith("--") and not name.startswith("--") and name.startswith(candidate):
            return candidate  # "-tp2": a short flag with its value attached
    return None


def override_args(args: Sequence[str], extra: Sequence[str], *, managed: Mapping[str, str] = MANAGED_VLLM_FLAGS,
                  source: str = "canary_extra_args") -> tuple[str, ...]:
    """``args`` with each ``--flag [value]`` of ``extra`` replacing the same flag, or appended.

    Both ``--flag value`` and ``--flag=value`` forms are understood; a flag not followed by a
    value (``--enforce-eager``) is a switch. ``extra`` comes from a user (a DAG param): each of
    its tokens reaches the container as a :func:`~llmops.core.podjob.literal`, never expanded.
    :func:`check_extra_args` refuses (:class:`VllmArgsError`) a flag in ``managed`` and input
    over its limits.
    """
    result = list(args)
    for flag, value in check_extra_args(extra, managed, source):
        position = _find_flag(result, literal(flag))
        new = [literal(flag)] + ([literal(value)] if value is not None else [])
        if position is None:
            result += new
            continue
        start, length = position
        result[start:start + length] = new
    return tuple(result)


def _flags(extra: Sequence[str], source: str = "canary_extra_args") -> list[tuple[str, str | None]]:
    flags: list[tuple[str, str | None]] = []
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("-") or token in ("-", "--"):
            raise VllmArgsError(f"{source}: {short_repr(token)} is not a flag; "
                                "fix: pass [\"--flag\", \"value\", ...]")
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
