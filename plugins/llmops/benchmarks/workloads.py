"""The fixed workload matrix of a hardware class, and the ``vllm bench serve`` command line per workload.

``include/benchmarks/<class>.yaml`` describes what a class is benchmarked with every night:
one or more blocks whose lists are crossed (input length x output length x request rate x
concurrency), the number of prompts, and the class's regression policy::

    hardware_class: h100x1
    dataset: random
    num_prompts: 500
    ignore_eos: true          # fixed output lengths: the tokens generated do not depend on the model
    matrix:
      - input_len: [128, 1024]
        output_len: [128]
        request_rate: [inf, 8]   # inf: every request at t=0 (the throughput ceiling)
        max_concurrency: [64]
    regression: {window: 7, min_history: 3, throughput_threshold: 0.05, latency_threshold: 0.10}

A workload's name (``in128-out128-rateinf-c64``) is its identity in MLflow; its hash covers
every field, so changing e.g. ``num_prompts`` starts a new baseline instead of comparing
unlike runs. Loading is strict: an unknown key, a missing key or an impossible value is a
:class:`WorkloadError` naming the file, the field and the fix.

The :class:`Workload` data and :func:`bench_serve_args` use only the standard library: the
benchmark pod job runs them inside the vLLM image. Only :func:`load_matrix` needs PyYAML.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmops.core.fields import INPUT_ERRORS, kind, load_yaml_file, short_repr
from llmops.core.limits import BENCHMARK_MATRIX_MAX_BYTES, BENCHMARK_MAX_WORKLOADS

SUFFIX = ".yaml"
DATASETS = ("random",)
_BLOCK_KEYS = ("input_len", "output_len", "request_rate", "max_concurrency")
_TOP_KEYS = {"hardware_class", "description", "dataset", "num_prompts", "seed", "ignore_eos", "num_warmups",
             "matrix", "regression"}
PERCENTILE_METRICS = "ttft,tpot,itl,e2el"
METRIC_PERCENTILES = "50,90,99"


class WorkloadError(ValueError):
    """A workload matrix that cannot be used; the message names the file, the field and the fix."""

    def __init__(self, file: str | Path, field: str, problem: str, fix: str) -> None:
        self.file, self.field = str(file), field
        super().__init__(f"{file}: {field}: {problem}; fix: {fix}")


@dataclass(frozen=True)
class Workload:
    """One benchmark workload: fixed prompt/output lengths, arrival rate and concurrency."""

    input_len: int
    output_len: int
    request_rate: float
    max_concurrency: int
    num_prompts: int
    dataset: str = "random"
    seed: int = 0
    ignore_eos: bool = True
    num_warmups: int = 0

    @property
    def name(self) -> str:
        """Stable identity in MLflow: ``in128-out128-rateinf-c64``."""
        rate = "inf" if math.isinf(self.request_rate) else f"{self.request_rate:g}"
        return f"in{self.input_len}-out{self.output_len}-rate{rate}-c{self.max_concurrency}"

    @property
    def workload_hash(self) -> str:
        """SHA-256 over every field: a changed definition is a new baseline, never compared."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``inf`` as the string ``"inf"``: JSON has no infinity)."""
        data = asdict(self)
        data["request_rate"] = "inf" if math.isinf(self.request_rate) else self.request_rate
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "--workloads") -> Workload:
        """Inverse of :meth:`to_dict`; raises :class:`WorkloadError` naming ``source`` and the field."""
        if not isinstance(data, Mapping):
            raise WorkloadError(source, "(workload)", f"expected a mapping, got {kind(data)}",
                                "pass the list workloads_to_json() writes")
        fields = set(cls.__dataclass_fields__)
        for key in fields - {"dataset", "seed", "ignore_eos", "num_warmups"}:
            if key not in data:
                raise WorkloadError(source, key, "required key is missing", "pass the list workloads_to_json() writes")
        for key in data:
            if key not in fields:
                raise WorkloadError(source, str(key)[:100], "unknown key", f"use one of {sorted(fields)}")
        values = dict(data)
        values["request_rate"] = _rate(values["request_rate"], source, "request_rate")
        for key in ("input_len", "output_len", "max_concurrency", "num_prompts"):
            values[key] = _positive_int(values[key], source, key)
        for key in ("seed", "num_warmups"):
            if key in values:
                values[key] = _int(values[key], source, key)
        if "ignore_eos" in values:
            values["ignore_eos"] = _bool(values["ignore_eos"], source, "ignore_eos")
        if values.get("dataset", "random") not in DATASETS:
            raise WorkloadError(source, "dataset", f"{short_repr(values['dataset'])} is not supported",
                                f"use one of {list(DATASETS)}")
        return cls(**values)


@dataclass(frozen=True)
class WorkloadMatrix:
    """Every workload of a hardware class, in file order, and its regression policy (a mapping)."""

    hardware_class: str
    workloads: tuple[Workload, ...]
    regression: Mapping[str, Any]
    source: str


def bench_serve_args(workload: Workload, *, base_url: str, served_model: str, tokenizer: str,
                     result_dir: str, result_filename: str,
                     goodput_slo_ms: Mapping[str, float] | None = None) -> list[str]:
    """Arguments after ``vllm bench serve`` for ``workload`` against ``base_url``.

    Completions backend (streamed chunks keep their boundaries there, so ITL is measured;
    with the chat backend merged chunks make it unreliable), percentiles 50/90/99 of TTFT,
    TPOT, ITL and end-to-end latency, goodput against ``goodput_slo_ms`` (``{"ttft": 800,
    "tpot": 40}``), the summary saved as JSON with per-request details.
    """
    if workload.dataset not in DATASETS:
        raise ValueError(f"dataset {workload.dataset!r} is not supported; use one of {DATASETS}")
    args = [
        "--backend", "vllm", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", served_model, "--tokenizer", tokenizer,
        "--dataset-name", workload.dataset,
        "--random-input-len", str(workload.input_len), "--random-output-len", str(workload.output_len),
        "--num-prompts", str(workload.num_prompts),
        "--request-rate", "inf" if math.isinf(workload.request_rate) else f"{workload.request_rate:g}",
        "--max-concurrency", str(workload.max_concurrency),
        "--seed", str(workload.seed), "--num-warmups", str(workload.num_warmups),
        "--percentile-metrics", PERCENTILE_METRICS, "--metric-percentiles", METRIC_PERCENTILES,
        "--save-result", "--save-detailed", "--result-dir", result_dir, "--result-filename", result_filename,
        "--disable-tqdm",
    ]
    if workload.ignore_eos:
        args.append("--ignore-eos")
    if goodput_slo_ms:
        args += ["--goodput", *(f"{k}:{v:g}" for k, v in goodput_slo_ms.items())]
    return args


def matrix_path(hardware_class: str, matrices_dir: str | Path) -> Path:
    """Where the workload matrix of ``hardware_class`` lives."""
    return Path(matrices_dir) / f"{hardware_class}{SUFFIX}"


def load_matrix(hardware_class: str, matrices_dir: str | Path) -> WorkloadMatrix:
    """Load and validate ``<matrices_dir>/<hardware_class>.yaml``; raise :class:`WorkloadError`."""
    path = matrix_path(hardware_class, matrices_dir)
    if not path.is_file():
        known = sorted(p.stem for p in Path(matrices_dir).glob(f"*{SUFFIX}"))
        raise WorkloadError(path, "(file)", f"no workload matrix for hardware class {hardware_class!r}",
                            f"add {path.name} (classes with one: {known})")
    try:
        data = load_yaml_file(path, BENCHMARK_MATRIX_MAX_BYTES, limit_name="BENCHMARK_MATRIX_MAX_BYTES")
    except INPUT_ERRORS as exc:
        raise WorkloadError(path, exc.field, exc.problem, exc.fix) from None
    return parse_matrix(data, path, hardware_class)


def parse_matrix(data: Any, path: str | Path, hardware_class: str) -> WorkloadMatrix:
    """Validate a loaded matrix document (see the module docstring for the format)."""
    if not isinstance(data, dict):
        raise WorkloadError(path, "(file)", f"expected a mapping at the top level, got {kind(data)}",
                            "write hardware_class, num_prompts, matrix, ... as top-level keys")
    unknown = sorted(str(key) for key in set(data) - _TOP_KEYS)
    if unknown:
        raise WorkloadError(path, unknown[0][:100], "unknown key", f"remove it or use one of {sorted(_TOP_KEYS)}")
    if data.get("hardware_class") != hardware_class:
        raise WorkloadError(path, "hardware_class",
                            f"{short_repr(data.get('hardware_class'))} does not match the file name",
                            f"set `hardware_class: {hardware_class}`")
    dataset = data.get("dataset", "random")
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise WorkloadError(path, "dataset", f"{short_repr(dataset)} is not supported", f"use one of {list(DATASETS)}")
    if "description" in data and not isinstance(data["description"], str):
        raise WorkloadError(path, "description", f"expected a string, got {kind(data['description'])}",
                            "write one line for humans")
    common = {
        "num_prompts": _positive_int(data.get("num_prompts"), path, "num_prompts"),
        "seed": _int(data.get("seed", 0), path, "seed"),
        "num_warmups": _int(data.get("num_warmups", 0), path, "num_warmups"),
        "ignore_eos": _bool(data.get("ignore_eos", True), path, "ignore_eos"),
        "dataset": dataset,
    }
    blocks = data.get("matrix")
    if not isinstance(blocks, list) or not blocks:
        raise WorkloadError(path, "matrix", "missing or empty",
                            "add a list of blocks, each with input_len, output_len, request_rate and "
                            "max_concurrency lists")
    workloads: list[Workload] = []
    for i, block in enumerate(blocks):
        workloads += _expand_block(block, path, f"matrix[{i}]", common)
        if len(workloads) > BENCHMARK_MAX_WORKLOADS:
            raise WorkloadError(path, f"matrix[{i}]", f"the matrix expands to more than {BENCHMARK_MAX_WORKLOADS} "
                                "workloads (llmops.core.limits.BENCHMARK_MAX_WORKLOADS)",
                                "shorten the lists: every block runs each combination of its values")
    names = [w.name for w in workloads]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WorkloadError(path, "matrix", f"workloads {duplicates} appear more than once",
                            "remove the overlap between blocks")
    regression = data.get("regression") or {}
    if not isinstance(regression, dict):
        raise WorkloadError(path, "regression", f"expected a mapping, got {kind(regression)}",
                            "write `regression: {window: 7, ...}`")
    for key, value in regression.items():
        if key == "metrics":
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                raise WorkloadError(path, "regression.metrics", f"expected a list of metric names, got {kind(value)}",
                                    "write e.g. `metrics: [request_throughput_rps, ttft_p99_ms]`")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WorkloadError(path, f"regression.{key}", f"expected a number, got {kind(value)}",
                                "write a number without quotes")
    from llmops.benchmarks.regression import Policy, PolicyError

    try:
        Policy.from_dict(regression)
    except (PolicyError, TypeError, ValueError) as exc:
        raise WorkloadError(path, "regression", str(exc), "correct the policy values") from None
    return WorkloadMatrix(hardware_class=hardware_class, workloads=tuple(workloads), regression=regression,
                          source=str(path))


def _expand_block(block: Any, path: str | Path, where: str, common: dict[str, Any]) -> list[Workload]:
    if not isinstance(block, dict):
        raise WorkloadError(path, where, f"expected a mapping, got {kind(block)}",
                            f"write a mapping with {list(_BLOCK_KEYS)}")
    allowed = {*_BLOCK_KEYS, "num_prompts"}
    unknown = sorted(str(key) for key in set(block) - allowed)
    if unknown:
        raise WorkloadError(path, f"{where}.{unknown[0][:100]}", "unknown key", f"use one of {sorted(allowed)}")
    lists: dict[str, list[Any]] = {}
    for key in _BLOCK_KEYS:
        if key not in block:
            raise WorkloadError(path, f"{where}.{key}", "required key is missing", f"add `{key}: [...]`")
        value = block[key]
        lists[key] = value if isinstance(value, list) else [value]
        if not lists[key]:
            raise WorkloadError(path, f"{where}.{key}", "empty list", "give at least one value")
    combinations = math.prod(len(values) for values in lists.values())
    if combinations > BENCHMARK_MAX_WORKLOADS:
        raise WorkloadError(path, where, f"expands to {combinations} workloads, over the limit of "
                            f"{BENCHMARK_MAX_WORKLOADS} (llmops.core.limits.BENCHMARK_MAX_WORKLOADS)",
                            "shorten the lists: the block runs each combination of its values")
    values = {
        "input_len": [_positive_int(v, path, f"{where}.input_len") for v in lists["input_len"]],
        "output_len": [_positive_int(v, path, f"{where}.output_len") for v in lists["output_len"]],
        "request_rate": [_rate(v, path, f"{where}.request_rate") for v in lists["request_rate"]],
        "max_concurrency": [_positive_int(v, path, f"{where}.max_concurrency") for v in lists["max_concurrency"]],
    }
    prompts = _positive_int(block["num_prompts"], path, f"{where}.num_prompts") if "num_prompts" in block \
        else common["num_prompts"]
    return [Workload(input_len=i, output_len=o, request_rate=r, max_concurrency=c,
                     **{**common, "num_prompts": prompts})
            for i, o, r, c in itertools.product(values["input_len"], values["output_len"],
                                                values["request_rate"], values["max_concurrency"])]


def _positive_int(value: Any, path: str | Path, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(path, field, f"{short_repr(value)} is not a whole number >= 1", "write e.g. 64")
    return value


def _int(value: Any, path: str | Path, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WorkloadError(path, field, f"{short_repr(value)} is not a whole number >= 0", "write e.g. 0")
    return value


def _bool(value: Any, path: str | Path, field: str) -> bool:
    if not isinstance(value, bool):
        raise WorkloadError(path, field, f"{short_repr(value)} is not true/false", "write true or false")
    return value


_INF = re.compile(r"^(inf|\.inf|infinity)$", re.IGNORECASE)


def _rate(value: Any, path: str | Path, field: str) -> float:
    if isinstance(value, str) and _INF.match(value.strip()):
        return math.inf
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isnan(value):
        raise WorkloadError(path, field, f"{short_repr(value)} is not a rate > 0 or inf",
                            "write requests per second (e.g. 8) or inf for all requests at once")
    return float(value)


def workloads_to_json(workloads: Sequence[Workload]) -> str:
    """The pod job's ``--workloads`` argument."""
    return json.dumps([w.to_dict() for w in workloads], sort_keys=True)
