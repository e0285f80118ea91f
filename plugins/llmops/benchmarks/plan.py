"""The benchmark pod jobs of a night: one per (hardware class, served model), grouped by pool.

Pure: builds :mod:`llmops.core.podjob` data from settings, hardware classes, workload matrices and
the served models (targets); the DAG's planning task fetches the targets from the registry.

Each pod: vLLM serves the model with the class's config (the sidecar, probed on /health), the
benchmark client runs the class's workload matrix as the main container **in the vLLM image**
(``vllm bench serve`` is vLLM's own client). That image does not carry this project's code,
so an init container from the jobs image copies the ``llmops`` package into a shared volume
first (``/opt/llmops``, on the main container's ``PYTHONPATH``). A model from the registry is
fetched into the model cache by the refresh pipeline's digest-verifying init container.

Airflow cannot map ``pool``/``pool_slots`` (they are partial-only arguments of a mapped
task), so the DAG has one mapped task per (pool, slots) group of the hardware classes and the
planner files each pod job under its group (:func:`pool_group`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from llmops.benchmarks.workloads import WorkloadMatrix, load_matrix, matrix_path, workloads_to_json
from llmops.core.hardware import HardwareClass
from llmops.core.podjob import Container, PodJob, Resources, Volume, literal
from llmops.serving.vllm import (
    CPU_STARTUP_BUDGET_S,
    GPU_STARTUP_BUDGET_S,
    MODEL_CACHE_MOUNT,
    SCRATCH_MOUNT,
    serving_pod_job,
)

CODE_MOUNT = "/opt/llmops"
BENCH_RESULT_DIR = f"{SCRATCH_MOUNT}/bench"
PIPELINE_LABEL = "llmops.io/pipeline"
# Wall time budget per workload on top of the server's start-up (a GPU workload of 500-2000
# prompts takes a few minutes; the CPU matrix seconds).
GPU_WORKLOAD_BUDGET_S = 900
CPU_WORKLOAD_BUDGET_S = 300


def pool_group(hw: HardwareClass) -> str:
    """The mapped task a class's pods run under: its pool and slots per pod (``gpu-h100_x2``)."""
    return f"{hw.pool.name}_x{hw.pool_slots}"


def pool_groups(classes: Iterable[HardwareClass]) -> dict[str, tuple[str, int]]:
    """Group key -> (pool name, pool slots), sorted: one mapped benchmark task each."""
    return {pool_group(hw): (hw.pool.name, hw.pool_slots) for hw in sorted(classes, key=pool_group)}


def default_target(model_name: str, default_model: str) -> dict[str, str]:
    """The served model when the registry has no champion: a checkpoint already in the model cache.

    ``default_model`` is a path under the model cache (``tiny-chat/good``); its first segment is
    taken as the model family (the model maker writes ``<family>/<variant>``).
    """
    path = default_model.strip("/")
    return {"role": "default", "model": model_name, "version": "default", "model_key": f"path:{path}",
            "model_path": f"{MODEL_CACHE_MOUNT}/{path}", "model_family": path.split("/", 1)[0]}


def registry_target(role: str, model_name: str, version: str, weights_uri: str, weight_digest: str,
                    model_dir: str, model_family: str | None) -> dict[str, str]:
    """A registered version (champion or challenger) as a benchmark target."""
    target = {"role": role, "model": model_name, "version": str(version), "model_key": f"sha256:{weight_digest}",
              "model_path": model_dir, "weights_uri": weights_uri, "weight_digest": weight_digest}
    if model_family:
        target["model_family"] = model_family
    return target


def served_name(target: Mapping[str, str]) -> str:
    """The model name vLLM answers to in the benchmark pod."""
    version = target["version"]
    return f"{target['model']}-{version if version == 'default' else 'v' + version}"


def pod_name(hw: HardwareClass, target: Mapping[str, str]) -> str:
    """A DNS-label pod-job name for (class, role)."""
    name = re.sub(r"[^a-z0-9-]", "-", f"bench-{hw.name}-{target['role']}".lower())
    return name[:63].strip("-")


def code_container(jobs_image: str) -> Container:
    """Init container: copy the ``llmops`` package from the jobs image into the shared code volume."""
    return Container(
        name="llmops-code", image=jobs_image, command=("cp",),
        # The jobs image's WORKDIR holds plugins/ (locally: the project root).
        args=("-R", "plugins/llmops", f"{CODE_MOUNT}/"),
        resources=Resources(cpu="100m", memory="128Mi"),
    )


def benchmark_timeout_s(hw: HardwareClass, matrix: WorkloadMatrix) -> int:
    """The deadline of a benchmark pod on ``hw``: vLLM's start-up plus a budget per workload."""
    startup, per_workload = ((GPU_STARTUP_BUDGET_S, GPU_WORKLOAD_BUDGET_S) if hw.gpu.count
                             else (CPU_STARTUP_BUDGET_S, CPU_WORKLOAD_BUDGET_S))
    return startup + per_workload * len(matrix.workloads)


def max_benchmark_timeout_s(classes: Iterable[HardwareClass], matrices_dir: str | Path) -> int:
    """The longest deadline a benchmark pod of any of ``classes`` (with a workload matrix) gets."""
    deadlines = [benchmark_timeout_s(hw, load_matrix(hw.name, matrices_dir)) for hw in classes
                 if matrix_path(hw.name, matrices_dir).is_file()]
    return max(deadlines, default=3600)


def benchmark_pod_job(*, hw: HardwareClass, matrix: WorkloadMatrix, target: Mapping[str, str], vllm_image: str,
                      jobs_image: str, fetch: Container | None = None, vllm_overrides: Sequence[str] = (),
                      timeout_s: int | None = None) -> PodJob:
    """The benchmark pod for ``target`` on ``hw`` (see the module docstring).

    ``vllm_overrides`` (``["--max-num-seqs", "32"]``) are ``vllm serve`` flags applied on top
    of the class config for a what-if run; they replace a flag the class sets.
    """
    from llmops.serving.vllm_args import override_args

    if matrix.hardware_class != hw.name:
        raise ValueError(f"workload matrix {matrix.source} is for {matrix.hardware_class!r}, not {hw.name!r}")
    served = served_name(target)
    slo = {"ttft": hw.slo.ttft_p99_ms, "tpot": hw.slo.tpot_p99_ms}
    target_json = json.dumps({k: target[k] for k in sorted(target)}, sort_keys=True)
    args = ["--workloads", workloads_to_json(matrix.workloads), "--served-model", served,
            "--tokenizer", target["model_path"], "--result-dir", BENCH_RESULT_DIR, "--target", target_json,
            "--vllm-overrides", literal(json.dumps(list(vllm_overrides))),
            "--goodput", *(f"{k}:{v:g}" for k, v in slo.items())]
    main = Container(
        name="bench", image=vllm_image, command=("python3", "-m", "llmops.jobs.benchmark"), args=tuple(args),
        env={
            "PYTHONPATH": CODE_MOUNT,
            "LLMOPS_RUNTIME_IMAGE": vllm_image,
            # The client loads the tokenizer from the model folder; nothing comes from a hub.
            "HOME": f"{SCRATCH_MOUNT}/home", "HF_HOME": f"{SCRATCH_MOUNT}/cache/huggingface",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
        },
        resources=Resources(cpu="2", memory="4Gi"),
    )
    if timeout_s is None:
        timeout_s = benchmark_timeout_s(hw, matrix)
    job = serving_pod_job(
        name=pod_name(hw, target), hw=hw, main=main, model_path=target["model_path"], served_model_name=served,
        vllm_image=vllm_image, labels={PIPELINE_LABEL: "benchmarks"}, timeout_s=timeout_s,
        extra_volumes=(Volume(name="llmops-code", mount_path=CODE_MOUNT, kind="scratch"),),
    )
    sidecar = job.sidecars[0]
    if vllm_overrides:
        sidecar = replace(sidecar, args=override_args(sidecar.args, list(vllm_overrides), source="vllm_overrides"))
    inits = (code_container(jobs_image), *([fetch] if fetch is not None else []))
    job = replace(job, sidecars=(sidecar,), init_containers=inits)
    job.validate()
    return job


def family_mismatch(hw: HardwareClass, target: Mapping[str, str]) -> str | None:
    """Why ``target`` cannot be served on ``hw`` (a different model family), or None."""
    family = target.get("model_family")
    if family and family != hw.model_family:
        return (f"class {hw.name} is sized for {hw.model_family}; {target['model']} "
                f"v{target['version']} is {family}")
    return None
