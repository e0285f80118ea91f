"""The vLLM serving sidecar and the pod jobs that run beside it.

A job that needs a model server (evaluate, benchmark, canary smoke test) is one pod: vLLM
as a sidecar that starts first and is probed on ``/health``, and the job as the main
container talking to ``http://127.0.0.1:$(VLLM_PORT)``. Everything that depends on the
machine (GPUs, engine knobs, ``/dev/shm``, node selector, tolerations) comes from the
hardware class, so the same DAG serves on a laptop CPU or on four B200s by configuration.

Pure: builds :mod:`llmops.core.podjob` data; no Airflow, no I/O beyond loading a hardware YAML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from llmops.core.hardware import HardwareClass
from llmops.core.podjob import Container, PodJob, Probe, Resources, Scheduling, Toleration, Volume

VLLM_CONTAINER = "vllm"
VLLM_PORT_ENV = "VLLM_PORT"
DEFAULT_VLLM_PORT = 8000
HEALTH_PATH = "/health"

MODEL_CACHE_MOUNT = "/models"
SHM_MOUNT = "/dev/shm"
SCRATCH_MOUNT = "/scratch"

PROBE_PERIOD_S = 2
# How long vLLM may take to answer /health: loading weights, profiling memory and capturing
# CUDA graphs take minutes for a large model on GPUs; the tiny CPU model is healthy in ~25 s.
GPU_STARTUP_BUDGET_S = 900
CPU_STARTUP_BUDGET_S = 300

HARDWARE_CLASS_LABEL = "llmops.io/hardware-class"


def vllm_startup_budget_s(hw: HardwareClass) -> int:
    """How long vLLM may take on ``hw`` to become healthy (weights loaded, memory profiled)."""
    return GPU_STARTUP_BUDGET_S if hw.gpu.count else CPU_STARTUP_BUDGET_S


def vllm_sidecar(hw: HardwareClass, model_path: str, served_model_name: str, image: str,
                 port_env: str = VLLM_PORT_ENV, *, scratch_dir: str = SCRATCH_MOUNT,
                 startup_budget_s: int | None = None) -> Container:
    """The vLLM OpenAI-compatible server container for ``hw``.

    ``vllm serve <model_path>`` with the hardware class's knobs, listening on
    ``$(<port_env>)``; GPUs, CPU and memory from the class; a probe on ``/health`` that
    gates the main container's start. Caches go under ``scratch_dir`` because the pod runs
    as an arbitrary non-root user whose home directory is not writable.
    """
    if startup_budget_s is None:
        startup_budget_s = vllm_startup_budget_s(hw)
    env = {
        # vLLM, Triton, torch.compile and Hugging Face write caches under HOME or these
        # roots; keep them in the pod's scratch volume (locally: the pod's work folder).
        "HOME": f"{scratch_dir}/home",
        "XDG_CACHE_HOME": f"{scratch_dir}/cache",
        "VLLM_CACHE_ROOT": f"{scratch_dir}/cache/vllm",
        "HF_HOME": f"{scratch_dir}/cache/huggingface",
        "TRITON_CACHE_DIR": f"{scratch_dir}/cache/triton",
        **hw.vllm.env,  # the hardware class has the last word
    }
    return Container(
        name=VLLM_CONTAINER,
        image=image,
        command=("vllm", "serve"),
        args=tuple(hw.vllm_serve_args(model_path, served_model_name, port_ref=f"$({port_env})")),
        env=env,
        resources=Resources(cpu=hw.resources.cpu, memory=hw.resources.memory, gpus=hw.gpu.count),
        readiness_probe=Probe(
            path=HEALTH_PATH,
            port_env=port_env,
            period_s=PROBE_PERIOD_S,
            timeout_s=2,
            failure_threshold=max(1, -(-startup_budget_s // PROBE_PERIOD_S)),
        ),
    )


def scheduling_for(hw: HardwareClass) -> Scheduling:
    """Node selector, tolerations and class name of ``hw`` as pod-job scheduling."""
    return Scheduling(
        hardware_class=hw.name,
        node_selector=dict(hw.node_selector),
        tolerations=tuple(
            Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in hw.tolerations
        ),
    )


def serving_volumes(hw: HardwareClass) -> tuple[Volume, ...]:
    """The model cache at ``/models``, a memory-backed ``/dev/shm`` sized by ``hw``, and scratch."""
    return (
        Volume(name="model-cache", mount_path=MODEL_CACHE_MOUNT, kind="model_cache"),
        # NCCL and vLLM's multi-process executor exchange tensors through /dev/shm; the
        # container runtime's default of 64 MiB breaks tensor parallelism.
        Volume(name="shm", mount_path=SHM_MOUNT, kind="shm", size_limit=hw.resources.shm_size),
        Volume(name="scratch", mount_path=SCRATCH_MOUNT, kind="scratch"),
    )


def serving_pod_job(*, name: str, hw: HardwareClass, main: Container, model_path: str,
                    served_model_name: str, vllm_image: str, port: int = DEFAULT_VLLM_PORT,
                    port_env: str = VLLM_PORT_ENV, labels: Mapping[str, str] | None = None,
                    timeout_s: int = 3600, extra_volumes: Sequence[Volume] = ()) -> PodJob:
    """A pod job running ``main`` beside a vLLM sidecar serving ``model_path`` on ``hw``.

    ``main`` reaches the server at ``http://127.0.0.1:$(<port_env>)``; it also receives
    ``LLMOPS_HARDWARE_CLASS`` and ``LLMOPS_HARDWARE_CONFIG_HASH`` so it can tag its MLflow
    run with exactly what it was served on (its own env wins on a name clash).
    """
    main_env = {
        "LLMOPS_HARDWARE_CLASS": hw.name,
        "LLMOPS_HARDWARE_CONFIG_HASH": hw.config_hash,
        **main.env,
    }
    main = replace(main, env=main_env)
    job = PodJob(
        name=name,
        main=main,
        sidecars=(vllm_sidecar(hw, model_path, served_model_name, vllm_image, port_env),),
        ports={port_env: port},
        volumes=(*serving_volumes(hw), *extra_volumes),
        scheduling=scheduling_for(hw),
        labels={HARDWARE_CLASS_LABEL: hw.name, **(labels or {})},
        timeout_s=timeout_s,
    )
    job.validate()
    return job


def pool_kwargs(hw: HardwareClass) -> dict[str, object]:
    """Airflow ``pool``/``pool_slots`` operator arguments that ration ``hw``'s GPUs."""
    return {"pool": hw.pool.name, "pool_slots": hw.pool_slots}
