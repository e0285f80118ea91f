"""Hardware classes: one YAML per GPU shape (and model family) -> vLLM args and pod resources.

A hardware class (``include/hardware_configs/<name>.yaml``) pins everything that depends on
the machine: which nodes the pod may run on, how many GPUs it takes, the vLLM engine knobs
sized for that memory, the container's CPU/memory/``/dev/shm``, the latency SLOs a benchmark
is judged against, and the Airflow pool that rations those GPUs.

Loading is strict: an unknown key, a missing knob or an impossible combination raises
:class:`HardwareConfigError`, whose message names the file, the field and the fix. A typo in
a config must fail the DAG parse, not silently fall back to a vLLM default on a GPU node. So
does a hostile file: over :data:`~llmops.core.limits.HARDWARE_CONFIG_MAX_BYTES`, not UTF-8, a
repeated key, a YAML alias bomb, NaN or infinity (see :mod:`llmops.core.fields`).

Only pydantic and PyYAML are imported: DAG files load these at parse time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from llmops.config.settings import PROJECT_ROOT
from llmops.core.fields import INPUT_ERRORS, kind, load_yaml_file, short_repr
from llmops.core.limits import HARDWARE_CONFIG_MAX_BYTES, MAX_REPORTED_PROBLEMS

KvCacheDtype = Literal["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla"]
KV_CACHE_DTYPES: tuple[str, ...] = get_args(KvCacheDtype)
"""Values vLLM accepts for ``--kv-cache-dtype``."""

ModelDtype = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]
MODEL_DTYPES: tuple[str, ...] = get_args(ModelDtype)
"""Values vLLM accepts for ``--dtype``."""

CONFIG_SUFFIX = ".yaml"

MIN_SHARED_CPU_ROUNDS = 3
"""Fewest latency rounds a shared-CPU class may declare: the median of 1 or 2 is not robust."""
MAX_LATENCY_ROUNDS = 15
"""Most latency rounds a class may declare (each round streams the eval's latency requests again)."""

# Fields added after deployments were pinned: left out of config_hash while at their default, so
# adding them did not change the hash (and the pins) of a class that does not use them.
_HASH_OMITTED_DEFAULTS: dict[str, dict[str, Any]] = {"slo": {"shared_cpu": False, "latency_rounds": 1}}

LAUNCHER_FLAGS: dict[str, str] = {
    "--model": "the model_path argument",
    "--port": "the port_ref argument",
    "--served-model-name": "the served_model_name argument",
    "--tensor-parallel-size": "vllm.tensor_parallel_size",
    "-tp": "vllm.tensor_parallel_size",
}
"""Flags :meth:`HardwareClass.vllm_serve_args` sets from its caller (where the weights are, how
the server is reached) or from the GPU count the pod requests; no override may change them."""

KNOB_FLAGS: dict[str, str] = {
    "--gpu-memory-utilization": "vllm.gpu_memory_utilization",
    "--max-num-seqs": "vllm.max_num_seqs",
    "--kv-cache-dtype": "vllm.kv_cache_dtype",
    "--max-model-len": "vllm.max_model_len",
    "--dtype": "vllm.dtype",
}
"""Flags :meth:`HardwareClass.vllm_serve_args` sets from a tuning knob of the class; a canary may
override them (e.g. ``--max-model-len 16`` to inject a config regression)."""

# Repeating one of these in extra_args would make the last occurrence win silently and hide the
# knob's (or the caller's) value.
_MANAGED_FLAGS = {**LAUNCHER_FLAGS, **KNOB_FLAGS}
_COUNT = re.compile(r"^[0-9]{1,6}$")

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?)(?P<unit>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_UNITS = {
    None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


class HardwareConfigError(ValueError):
    """A hardware-class config that cannot be used; the message names the file, field and fix."""

    def __init__(self, file: str | Path, problems: list[tuple[str, str, str]]) -> None:
        self.file = str(file)
        self.problems = problems
        self.field = problems[0][0] if problems else ""
        lines = [f"{field}: {problem}; fix: {fix}" for field, problem, fix in problems[:MAX_REPORTED_PROBLEMS]]
        if len(problems) > MAX_REPORTED_PROBLEMS:
            lines.append(f"... and {len(problems) - MAX_REPORTED_PROBLEMS} more problems; fix: correct the ones "
                         "above and load the file again")
        if len(problems) == 1:
            message = f"{self.file}: {lines[0]}"
        else:
            message = f"{self.file}: {len(problems)} problems:\n" + "\n".join(f"  - {line}" for line in lines)
        super().__init__(message)


def parse_quantity(value: str) -> float:
    """A Kubernetes quantity (``8``, ``500m``, ``64Gi``) as a number (cores or bytes)."""
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    return float(match["num"]) * _UNITS[match["unit"]]


def _quantity(value: Any) -> Any:
    # YAML reads `cpu: 8` as an int; Kubernetes quantities are strings.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = f"{value:g}"
    if isinstance(value, str) and not _QUANTITY.match(value):
        raise ValueError("not a Kubernetes quantity (e.g. '8', '500m', '64Gi')")
    return value


Quantity = Annotated[str, BeforeValidator(_quantity)]


class _Strict(BaseModel):
    # strict: "2" is not a GPU count and `true` is not an env value; extra: typos fail;
    # .nan / .inf are no latency objective or memory fraction.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class GpuSpec(_Strict):
    """The GPUs one pod of this class takes."""

    product: str = Field(min_length=1, description="GPU model, as nvidia-smi names it ('none' for CPU)")
    count: int = Field(ge=0, description="GPUs per pod (0 for a CPU class)")
    memory_gib: int = Field(ge=0, description="memory of one GPU in GiB (0 for a CPU class)")


class TolerationSpec(_Strict):
    """A Kubernetes toleration, typically for the ``nvidia.com/gpu`` taint."""

    key: str = Field(min_length=1, description="the taint key, e.g. nvidia.com/gpu")
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="the taint effect tolerated (NoSchedule for the GPU taint)")


class VllmSpec(_Strict):
    """The vLLM engine knobs sized for this hardware."""

    tensor_parallel_size: int = Field(ge=1, description="GPUs one model replica is sharded over")
    gpu_memory_utilization: float = Field(gt=0, le=1, description="fraction of GPU memory vLLM may use, in (0, 1]")
    max_num_seqs: int = Field(ge=1, description="maximum concurrent sequences per engine step")
    kv_cache_dtype: KvCacheDtype = Field(description=f"KV cache element type, one of {', '.join(KV_CACHE_DTYPES)}")
    max_model_len: int = Field(ge=1, description="context length (prompt + output tokens)")
    dtype: ModelDtype = Field(description=f"weights/activation dtype, one of {', '.join(MODEL_DTYPES)}")
    extra_args: list[str] = Field(default_factory=list, description="further `vllm serve` flags, as a list of strings")
    env: dict[str, str] = Field(default_factory=dict, description="env vars of the vLLM container (string values)")


class ResourcesSpec(_Strict):
    """CPU, memory and ``/dev/shm`` of the vLLM container."""

    cpu: Quantity = Field(description="CPU request, a Kubernetes quantity")
    memory: Quantity = Field(description="memory request and limit, a Kubernetes quantity")
    shm_size: Quantity = Field(description="size limit of the memory-backed /dev/shm emptyDir")


class SloSpec(_Strict):
    """Latency objectives a benchmark on this class is judged against."""

    ttft_p99_ms: float = Field(gt=0, description="p99 time to first token, milliseconds")
    tpot_p99_ms: float = Field(gt=0, description="p99 time per output token, milliseconds")
    max_regression: float | None = Field(
        default=0.10, ge=0,
        description="largest allowed p99 regression against the champion on this class (0.10 = 10%); "
                    "null: no relative check (only the SLO) on a class whose run-to-run noise is larger",
    )
    shared_cpu: bool = Field(
        default=False,
        description="true or false: whether the server shares its CPU cores with other processes (the "
                    "embedded default: Airflow, MLflow and the eval client on 2 cores); a shared-CPU class "
                    "is judged on the median of latency_rounds measurements instead of a single one",
    )
    latency_rounds: int = Field(
        default=1, ge=1, le=MAX_LATENCY_ROUNDS,
        description=f"how many rounds the qualify eval measures p99 latency in: 1 (a single measurement) "
                    f"on a dedicated class, {MIN_SHARED_CPU_ROUNDS} to {MAX_LATENCY_ROUNDS} (odd, e.g. 5) "
                    "with shared_cpu: true; the gate judges the median of the rounds' p99s",
    )


class PoolSpec(_Strict):
    """The Airflow pool that rations this class's GPUs."""

    name: str = Field(min_length=1, description="Airflow pool name")
    slots: int = Field(ge=1, description="GPUs of this kind available to Airflow (pool size)")


class HardwareClass(_Strict):
    """One validated hardware-class config (see the module docstring)."""

    name: str = Field(description="class name; must equal the file name without .yaml")
    description: str = Field(description="one line for humans")
    model_family: str = Field(min_length=1, description="the model family these knobs are sized for")
    gpu: GpuSpec = Field(description="a mapping with product, count, memory_gib")
    node_selector: dict[str, str] = Field(default_factory=dict,
                                          description="node labels the pod requires (string values)")
    tolerations: list[TolerationSpec] = Field(default_factory=list,
                                              description="a list of {key, operator, value, effect} tolerations")
    vllm: VllmSpec = Field(description="the vLLM knobs: tensor_parallel_size, gpu_memory_utilization, "
                                        "max_num_seqs, kv_cache_dtype, max_model_len, dtype, extra_args, env")
    resources: ResourcesSpec = Field(description="a mapping with cpu, memory, shm_size")
    slo: SloSpec = Field(description="a mapping with ttft_p99_ms, tpot_p99_ms, max_regression, shared_cpu, "
                                     "latency_rounds")
    pool: PoolSpec = Field(description="a mapping with the Airflow pool's name and slots")

    @property
    def pool_slots(self) -> int:
        """Pool slots one task of this class takes: its GPU count, at least 1."""
        return max(1, self.gpu.count)

    @property
    def config_hash(self) -> str:
        """SHA-256 (hex) of the canonical config, to pin what a deployment ran on.

        Canonical: the validated values as sorted, compact JSON, so YAML formatting, key order
        and comments do not change it. ``description`` is left out on purpose: rewording prose
        must not make a pinned deployment look different. Fields added later
        (``slo.shared_cpu``, ``slo.latency_rounds``) count only when set off their default, so a
        class that does not use them kept its hash.
        """
        data = self.model_dump(mode="json", exclude={"description"})
        for section, defaults in _HASH_OMITTED_DEFAULTS.items():
            for key, default in defaults.items():
                if data[section].get(key) == default:
                    del data[section][key]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def vllm_serve_args(self, model_path: str, served_model_name: str,
                        port_ref: str = "$(VLLM_PORT)") -> list[str]:
        """Arguments after ``vllm serve``: the model, its name, the port and every knob.

        ``port_ref`` defaults to a ``$(VLLM_PORT)`` reference that the kubelet (or the local
        launcher) expands, so the same args serve on any port.
        """
        knobs = self.vllm
        return [
            model_path,
            "--served-model-name", served_model_name,
            "--port", port_ref,
            "--tensor-parallel-size", str(knobs.tensor_parallel_size),
            "--gpu-memory-utilization", f"{knobs.gpu_memory_utilization:g}",
            "--max-num-seqs", str(knobs.max_num_seqs),
            "--kv-cache-dtype", knobs.kv_cache_dtype,
            "--max-model-len", str(knobs.max_model_len),
            "--dtype", knobs.dtype,
            *knobs.extra_args,
        ]


def config_path(name: str, configs_dir: str | Path) -> Path:
    """Where the config of hardware class ``name`` lives."""
    return Path(configs_dir) / f"{name}{CONFIG_SUFFIX}"


def hardware_pin_problem(pinned: Mapping[str, str], hw: HardwareClass, config_file: str | Path) -> str | None:
    """Why a version pinned to ``pinned`` (class name -> config hash, a deployment manifest's
    ``hardware_configs``) may not serve on ``hw`` whose YAML is ``config_file``; ``None`` when it may.

    What serves must be what was qualified: a class the version was never qualified on, or a
    class whose config changed since, is refused, with the file and the fix named.
    """
    path = Path(config_file)
    shown = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
    digest = pinned.get(hw.name)
    if digest is None:
        return (f"hardware_configs has no entry for class {hw.name!r} (it pins {', '.join(sorted(pinned)) or 'none'}); "
                f"fix: serve it on one of those classes (LLMOPS_DEFAULT_HARDWARE_CLASS) or qualify the version on "
                f"{hw.name!r} (model_refresh with that class)")
    if digest != hw.config_hash:
        return (f"{shown}: config hash {hw.config_hash} differs from hardware_configs.{hw.name} {digest} pinned "
                f"when the version was qualified; fix: check out the commit whose {shown} has hash {digest} "
                f"(git log -- {shown}), or re-qualify the version on the changed class (runtime_requalify) before "
                f"it serves")
    return None


def load_hardware_class(name: str, configs_dir: str | Path) -> HardwareClass:
    """Load and validate ``<configs_dir>/<name>.yaml``; raise :class:`HardwareConfigError`."""
    if not isinstance(name, str):
        raise HardwareConfigError(configs_dir, [("name", f"expected a hardware class name, got {kind(name)}",
                                                 "pass the class name as a string (e.g. h100x1)")])
    path = config_path(name, configs_dir)
    if not _NAME.match(name):
        raise HardwareConfigError(path, [("name", f"{name!r} is not a valid hardware class name",
                                          "use lowercase letters, digits and '-' (e.g. h100x1)")])
    if not path.is_file():
        known = sorted(p.stem for p in Path(configs_dir).glob(f"*{CONFIG_SUFFIX}"))
        raise HardwareConfigError(path, [("name", f"no hardware class {name!r} in {configs_dir}",
                                          f"use one of {known} or add {path.name}")])
    return load_file(path)


def load_file(path: str | Path) -> HardwareClass:
    """Load and validate one hardware-class YAML file."""
    path = Path(path)
    try:
        data = load_yaml_file(path, HARDWARE_CONFIG_MAX_BYTES, limit_name="HARDWARE_CONFIG_MAX_BYTES")
    except INPUT_ERRORS as exc:
        raise HardwareConfigError(path, [(exc.field, exc.problem, exc.fix)]) from None
    if not isinstance(data, dict):
        raise HardwareConfigError(path, [("(file)", f"expected a mapping at the top level, got {kind(data)}",
                                          "write `name: ...`, `gpu: ...` etc. as top-level keys")])
    try:
        hw = HardwareClass.model_validate(data)
    except ValidationError as exc:
        raise HardwareConfigError(path, [_explain(err) for err in exc.errors()]) from None
    problems = _consistency_problems(hw, path)
    if problems:
        raise HardwareConfigError(path, problems)
    return hw


def load_all(configs_dir: str | Path) -> dict[str, HardwareClass]:
    """Every hardware class in ``configs_dir``, by name; also checks that shared pools agree."""
    classes: dict[str, HardwareClass] = {}
    pools: dict[str, tuple[int, str]] = {}
    for path in sorted(Path(configs_dir).glob(f"*{CONFIG_SUFFIX}")):
        hw = load_file(path)
        seen = pools.setdefault(hw.pool.name, (hw.pool.slots, path.name))
        if seen[0] != hw.pool.slots:
            # One Airflow pool has one size: two classes sharing it must agree on it.
            raise HardwareConfigError(path, [(
                "pool.slots",
                f"pool {hw.pool.name!r} has {hw.pool.slots} slots here but {seen[0]} in {seen[1]}",
                f"use the same slots in every class of pool {hw.pool.name!r}, or another pool name",
            )])
        classes[hw.name] = hw
    return classes


_TYPE_FIXES = {
    "string_type": "quote it in YAML so that it is a string (e.g. \"1\")",
    "int_type": "write a whole number without quotes",
    "int_from_float": "write a whole number",
    "float_type": "write a number without quotes",
    "list_type": "write a YAML list",
    "dict_type": "write a YAML mapping",
    "model_type": "write a YAML mapping",
    "bool_type": "write true or false without quotes",
}


def _explain(err: Any) -> tuple[str, str, str]:
    """A pydantic error as (field, problem, fix), in the words of the YAML file."""
    loc = tuple(err["loc"])
    field = _field_name(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        return field, f"unknown key {loc[-1]!r}", f"remove it or use one of {_allowed_keys(loc[:-1])}"
    hint = _field_description(loc)
    if kind == "missing":
        return field, "required key is missing", f"add `{loc[-1]}:`" + (f" ({hint})" if hint else "")
    problem = f"{err['msg'].removeprefix('Value error, ')} (got {short_repr(err.get('input'))})"
    fixes = [fix for fix in (_TYPE_FIXES.get(kind), f"expected {hint}" if hint else None) if fix]
    return field, problem, "; ".join(fixes) or "correct the value"


def _field_name(loc: tuple[Any, ...]) -> str:
    """``('tolerations', 0, 'effect')`` -> ``tolerations[0].effect``."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "(file)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (list indexes skipped)."""
    model: type[BaseModel] | None = HardwareClass
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        if get_args(annotation) and getattr(annotation, "__origin__", None) is list:
            annotation = get_args(annotation)[0]
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model = _model_at(loc)
    return sorted(model.model_fields) if model else []


def _field_description(loc: tuple[Any, ...]) -> str:
    names = [part for part in loc if not isinstance(part, int)]
    if not names:
        return ""
    parent = _model_at(tuple(names[:-1]))
    if parent is None or names[-1] not in parent.model_fields:
        return ""
    return parent.model_fields[names[-1]].description or ""


def _flag_value(args: list[str], *flags: str) -> int:
    """Value of an integer flag in ``args`` (``--x N`` or ``--x=N``), 1 when absent."""
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args) and _COUNT.match(args[i + 1]):
                return int(args[i + 1])
            if arg.startswith(flag + "=") and _COUNT.match(arg.split("=", 1)[1]):
                return int(arg.split("=", 1)[1])
    return 1


def _consistency_problems(hw: HardwareClass, path: Path) -> list[tuple[str, str, str]]:
    """Checks across fields that a schema cannot express: (field, problem, fix) for each."""
    problems: list[tuple[str, str, str]] = []
    knobs, gpus = hw.vllm, hw.gpu.count
    if hw.name != path.stem:
        problems.append(("name", f"{hw.name!r} does not match the file name {path.name!r}",
                         f"set `name: {path.stem}` or rename the file to {hw.name}{CONFIG_SUFFIX}"))
    tp = knobs.tensor_parallel_size
    if gpus == 0 and tp != 1:
        problems.append(("vllm.tensor_parallel_size", f"{tp} with gpu.count 0",
                         "a CPU class (gpu.count 0) requires tensor_parallel_size: 1"))
    elif tp > gpus > 0:
        problems.append(("vllm.tensor_parallel_size", f"{tp} is more than gpu.count ({gpus})",
                         f"set tensor_parallel_size to at most {gpus}, or raise gpu.count to {tp}"))
    elif gpus > 0:
        pp = _flag_value(knobs.extra_args, "--pipeline-parallel-size", "-pp")
        dp = _flag_value(knobs.extra_args, "--data-parallel-size", "-dp")
        if tp * pp * dp != gpus:
            # GPUs vLLM does not shard over would sit idle while still blocked for other pods.
            problems.append(("vllm.tensor_parallel_size",
                             f"tensor x pipeline x data parallel = {tp}x{pp}x{dp} = {tp * pp * dp} GPUs, "
                             f"but gpu.count is {gpus}",
                             f"make the product equal gpu.count (e.g. tensor_parallel_size: {gpus}), or add "
                             "--data-parallel-size / --pipeline-parallel-size to vllm.extra_args"))
    if gpus > 0:
        if hw.gpu.memory_gib == 0:
            problems.append(("gpu.memory_gib", "0 for a GPU class", "set the memory of one GPU in GiB (e.g. 80)"))
        if not hw.node_selector:
            # Without it the pod may land on another GPU model, and the knobs and SLOs are wrong there.
            problems.append(("node_selector", "empty for a GPU class",
                             "add the GPU product label, e.g. `nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3`"))
    for i, arg in enumerate(knobs.extra_args):
        flag = arg.split("=", 1)[0]
        if flag in _MANAGED_FLAGS:
            problems.append((f"vllm.extra_args[{i}]", f"{flag} is set by the launcher",
                             f"remove it and set {_MANAGED_FLAGS[flag]} instead"))
    for env_name in knobs.env:
        if not _ENV_NAME.match(env_name):
            problems.append((f"vllm.env.{env_name}", "not a valid environment variable name",
                             "use letters, digits and '_' (not starting with a digit)"))
    if parse_quantity(hw.resources.shm_size) > parse_quantity(hw.resources.memory):
        # A memory-backed emptyDir counts against the container's memory limit.
        problems.append(("resources.shm_size",
                         f"{hw.resources.shm_size} is more than resources.memory ({hw.resources.memory})",
                         "lower shm_size or raise memory: /dev/shm is charged to the memory limit"))
    problems += _latency_round_problems(hw)
    if hw.pool.slots < hw.pool_slots:
        problems.append(("pool.slots", f"{hw.pool.slots} slots but one task takes {hw.pool_slots} (gpu.count)",
                         f"set pool.slots to at least {hw.pool_slots}, or the task can never run"))
    return problems


def _latency_round_problems(hw: HardwareClass) -> list[tuple[str, str, str]]:
    """``slo.shared_cpu`` and ``slo.latency_rounds`` must agree (see :class:`SloSpec`)."""
    slo = hw.slo
    if slo.shared_cpu and hw.gpu.count > 0:
        # A GPU class's latency is judged on one measurement; the rounds are for shared CPU cores.
        return [("slo.shared_cpu", f"true on a GPU class (gpu.count {hw.gpu.count})",
                 "remove shared_cpu and latency_rounds: a GPU class is judged on a single measurement")]
    if slo.shared_cpu and slo.latency_rounds < MIN_SHARED_CPU_ROUNDS:
        return [("slo.latency_rounds", f"{slo.latency_rounds} on a shared-CPU class (slo.shared_cpu: true)",
                 f"set latency_rounds to {MIN_SHARED_CPU_ROUNDS} or more (odd, e.g. 5): the median of 1 or 2 "
                 "rounds is not robust to one noisy round")]
    if not slo.shared_cpu and slo.latency_rounds != 1:
        return [("slo.latency_rounds", f"{slo.latency_rounds} but slo.shared_cpu is false",
                 "set `shared_cpu: true` when the class shares its CPU cores, or remove latency_rounds "
                 "(a dedicated class is judged on a single measurement)")]
    return []
