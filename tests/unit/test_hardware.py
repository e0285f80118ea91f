"""Hardware-class configs: every shipped YAML loads, and every mistake names file, field and fix."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.config.settings import PROJECT_ROOT
from llmops.core.hardware import (
    KV_CACHE_DTYPES,
    HardwareClass,
    HardwareConfigError,
    load_all,
    load_file,
    load_hardware_class,
)

CONFIGS = PROJECT_ROOT / "include" / "hardware_configs"
REQUIRED = ("h100x1", "h100x2", "h200x1", "b200x4", "cpu")
GPU_CLASSES = ("h100x1", "h100x2", "h200x1", "b200x4")


def _raw(name: str = "h100x1") -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def _write(tmp_path: Path, data: dict[str, Any], file_name: str | None = None) -> Path:
    path = tmp_path / (file_name or f"{data['name']}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# -- the shipped configs ---------------------------------------------------------------------------


def test_every_shipped_config_loads() -> None:
    classes = load_all(CONFIGS)
    assert set(REQUIRED) <= set(classes)
    assert len(classes) == len(list(CONFIGS.glob("*.yaml")))
    for name, hw in classes.items():
        assert hw.name == name
        assert hw.model_family
        assert hw.description


@pytest.mark.parametrize("name", REQUIRED)
def test_load_hardware_class_by_name(name: str) -> None:
    hw = load_hardware_class(name, CONFIGS)
    assert isinstance(hw, HardwareClass)
    assert hw.vllm.tensor_parallel_size <= max(1, hw.gpu.count)
    assert hw.pool_slots == max(1, hw.gpu.count)
    assert hw.pool.slots >= hw.pool_slots


@pytest.mark.parametrize("name", GPU_CLASSES)
def test_gpu_classes_select_their_gpu_and_tolerate_its_taint(name: str) -> None:
    hw = load_hardware_class(name, CONFIGS)
    assert hw.gpu.count >= 1 and hw.gpu.memory_gib > 0
    assert hw.node_selector["nvidia.com/gpu.product"].startswith("NVIDIA-")
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in hw.tolerations)
    assert hw.model_family == "llama-3.1-8b-instruct"
    assert hw.vllm.dtype == "bfloat16"


def test_cpu_class_is_the_embedded_default() -> None:
    hw = load_hardware_class("cpu", CONFIGS)
    assert hw.gpu.count == 0 and hw.vllm.tensor_parallel_size == 1
    assert hw.vllm.dtype == "float32" and hw.vllm.max_model_len == 512
    assert "--enforce-eager" in hw.vllm.extra_args
    assert hw.vllm.env == {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
                           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                           # two engines in one canary pod must not share one pinned core
                           "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}
    assert not hw.tolerations
    assert hw.pool_slots == 1


def test_b200x4_shards_over_four_gpus_with_fp8_kv_cache() -> None:
    hw = load_hardware_class("b200x4", CONFIGS)
    assert hw.gpu.count == 4 and hw.vllm.tensor_parallel_size == 4
    assert hw.vllm.kv_cache_dtype == "fp8"
    assert hw.pool_slots == 4


def test_classes_sharing_a_pool_agree_on_its_size() -> None:
    classes = load_all(CONFIGS)
    assert classes["h100x1"].pool.name == classes["h100x2"].pool.name
    sizes: dict[str, set[int]] = {}
    for hw in classes.values():
        sizes.setdefault(hw.pool.name, set()).add(hw.pool.slots)
    assert all(len(s) == 1 for s in sizes.values())


# -- vllm serve arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_vllm_serve_args_carry_every_knob(name: str) -> None:
    hw = load_hardware_class(name, CONFIGS)
    args = hw.vllm_serve_args("/models/m", "served")
    assert args[0] == "/models/m"
    assert _flag(args, "--served-model-name") == "served"
    assert _flag(args, "--port") == "$(VLLM_PORT)"
    assert _flag(args, "--tensor-parallel-size") == str(hw.vllm.tensor_parallel_size)
    assert float(_flag(args, "--gpu-memory-utilization")) == hw.vllm.gpu_memory_utilization
    assert _flag(args, "--max-num-seqs") == str(hw.vllm.max_num_seqs)
    assert _flag(args, "--kv-cache-dtype") == hw.vllm.kv_cache_dtype
    assert _flag(args, "--max-model-len") == str(hw.vllm.max_model_len)
    assert _flag(args, "--dtype") == hw.vllm.dtype
    assert args[len(args) - len(hw.vllm.extra_args):] == list(hw.vllm.extra_args)


def test_vllm_serve_args_exact_for_h100x2() -> None:
    hw = load_hardware_class("h100x2", CONFIGS)
    assert hw.vllm_serve_args("/models/llama", "llama", port_ref="$(PORT)") == [
        "/models/llama", "--served-model-name", "llama", "--port", "$(PORT)",
        "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.9", "--max-num-seqs", "384",
        "--kv-cache-dtype", "auto", "--max-model-len", "65536", "--dtype", "bfloat16",
        "--enable-prefix-caching", "--max-num-batched-tokens", "8192",
    ]


# -- config hash -----------------------------------------------------------------------------------


def test_config_hash_is_stable(tmp_path: Path) -> None:
    hw = load_hardware_class("h100x1", CONFIGS)
    assert len(hw.config_hash) == 64 and int(hw.config_hash, 16) >= 0
    assert load_hardware_class("h100x1", CONFIGS).config_hash == hw.config_hash
    # Key order, YAML style, comments and the prose description do not change what ran.
    data = _raw()
    data["description"] = "reworded"
    reordered = dict(reversed(list(data.items())))
    path = tmp_path / "h100x1.yaml"
    path.write_text("# a comment\n" + yaml.safe_dump(reordered, sort_keys=True, default_flow_style=True))
    assert load_file(path).config_hash == hw.config_hash


@pytest.mark.parametrize(("section", "key", "value"), [
    ("vllm", "max_num_seqs", 255),
    ("vllm", "kv_cache_dtype", "fp8"),
    ("vllm", "extra_args", ["--enable-prefix-caching"]),
    ("resources", "shm_size", "4Gi"),
    ("pool", "slots", 4),
])
def test_config_hash_is_sensitive(tmp_path: Path, section: str, key: str, value: Any) -> None:
    data = _raw()
    data[section][key] = value
    assert load_file(_write(tmp_path, data)).config_hash != load_hardware_class("h100x1", CONFIGS).config_hash


def test_all_shipped_hashes_differ() -> None:
    hashes = [hw.config_hash for hw in load_all(CONFIGS).values()]
    assert len(set(hashes)) == len(hashes)


# -- errors name the file, the field and the fix ---------------------------------------------------


def _set(path: str, value: Any):
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    return mutate


def _delete(path: str):
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]
    return mutate


ERROR_CASES = {
    "unknown top-level key": (_set("gpus", 2), "gpus", "unknown key"),
    "unknown nested key": (_set("vllm.tensor_parallel", 1), "vllm.tensor_parallel", "tensor_parallel_size"),
    "missing knob": (_delete("vllm.max_num_seqs"), "vllm.max_num_seqs", "add `max_num_seqs:`"),
    "missing section": (_delete("pool"), "pool", "add `pool:` (a mapping with the Airflow pool's name and slots)"),
    "tp above gpu count": (_set("vllm.tensor_parallel_size", 4), "vllm.tensor_parallel_size", "at most 1"),
    "gpu util above 1": (_set("vllm.gpu_memory_utilization", 1.5), "vllm.gpu_memory_utilization", "(0, 1]"),
    "gpu util zero": (_set("vllm.gpu_memory_utilization", 0), "vllm.gpu_memory_utilization", "(0, 1]"),
    "unknown kv cache dtype": (_set("vllm.kv_cache_dtype", "int4"), "vllm.kv_cache_dtype", "fp8_e4m3"),
    "max_num_seqs zero": (_set("vllm.max_num_seqs", 0), "vllm.max_num_seqs", "greater than or equal to 1"),
    "unknown dtype": (_set("vllm.dtype", "fp4"), "vllm.dtype", "bfloat16"),
    "string gpu count": (_set("gpu.count", "1"), "gpu.count", "without quotes"),
    "non-string env value": (_set("vllm.env.VLLM_NO_USAGE_STATS", 1), "vllm.env.VLLM_NO_USAGE_STATS",
                             "quote it"),
    "bad env name": (_set("vllm.env.1BAD", "x"), "vllm.env.1BAD", "variable name"),
    "knob repeated in extra_args": (_set("vllm.extra_args", ["--max-model-len=4096"]), "vllm.extra_args[0]",
                                    "vllm.max_model_len"),
    "bad quantity": (_set("resources.memory", "lots"), "resources.memory", "quantity"),
    "shm above memory": (_set("resources.shm_size", "128Gi"), "resources.shm_size", "lower shm_size"),
    "pool smaller than a task": (_set("pool.slots", 0), "pool.slots", "greater than or equal to 1"),
    "gpu class without node selector": (_set("node_selector", {}), "node_selector", "nvidia.com/gpu.product"),
    "bad toleration effect": (_set("tolerations", [{"key": "nvidia.com/gpu", "effect": "Never"}]),
                              "tolerations[0].effect", "NoSchedule"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_names_file_field_and_fix(tmp_path: Path, case: str) -> None:
    mutate, field, fix_fragment = ERROR_CASES[case]
    data = copy.deepcopy(_raw())
    mutate(data)
    path = _write(tmp_path, data, "h100x1.yaml")
    with pytest.raises(HardwareConfigError) as info:
        load_file(path)
    message = str(info.value)
    assert str(path) in message and info.value.file == str(path)
    assert f"{field}:" in message, message
    assert "fix:" in message and fix_fragment in message, message
    assert field in [f for f, _, _ in info.value.problems]


def test_cpu_class_requires_tensor_parallel_one(tmp_path: Path) -> None:
    data = _raw("cpu")
    data["vllm"]["tensor_parallel_size"] = 2
    with pytest.raises(HardwareConfigError, match=r"cpu\.yaml: vllm\.tensor_parallel_size: .*tensor_parallel_size: 1"):
        load_file(_write(tmp_path, data))


def test_idle_gpus_are_refused_unless_data_parallel(tmp_path: Path) -> None:
    data = _raw("b200x4")
    data["vllm"]["tensor_parallel_size"] = 2
    with pytest.raises(HardwareConfigError, match=r"vllm\.tensor_parallel_size: .*2x1x1 = 2 GPUs, but gpu\.count is 4"):
        load_file(_write(tmp_path, data))
    data["vllm"]["extra_args"] = ["--data-parallel-size", "2"]
    assert load_file(_write(tmp_path, data)).vllm.tensor_parallel_size == 2


def test_file_name_must_match_name(tmp_path: Path) -> None:
    path = _write(tmp_path, _raw(), "h100-single.yaml")
    with pytest.raises(HardwareConfigError, match=r"h100-single\.yaml: name: .*set `name: h100-single`") as info:
        load_file(path)
    assert info.value.field == "name"


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    data = _raw()
    data["vllm"]["max_num_seqs"] = 0
    data["vllm"]["kv_cache_dtype"] = "int4"
    with pytest.raises(HardwareConfigError) as info:
        load_file(_write(tmp_path, data))
    assert "2 problems" in str(info.value)
    assert {f for f, _, _ in info.value.problems} == {"vllm.max_num_seqs", "vllm.kv_cache_dtype"}


def test_unknown_class_lists_the_known_ones() -> None:
    with pytest.raises(HardwareConfigError, match=r"no hardware class 'a100x8'.*'h100x1'"):
        load_hardware_class("a100x8", CONFIGS)


def test_class_name_cannot_escape_the_folder() -> None:
    with pytest.raises(HardwareConfigError, match="not a valid hardware class name"):
        load_hardware_class("../secrets", CONFIGS)


def test_invalid_yaml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nvllm: [unclosed\n")
    with pytest.raises(HardwareConfigError, match=r"broken\.yaml: line 3: not valid YAML"):
        load_file(path)


def test_load_all_refuses_disagreeing_pool_sizes(tmp_path: Path) -> None:
    one, two = _raw("h100x1"), _raw("h100x2")
    two["pool"]["slots"] = 4
    _write(tmp_path, one)
    _write(tmp_path, two)
    with pytest.raises(HardwareConfigError, match=r"h100x2\.yaml: pool\.slots: pool 'gpu-h100' has 4 slots"):
        load_all(tmp_path)


def test_kv_cache_dtypes_are_vllm_values() -> None:
    assert {"auto", "fp8", "fp8_e4m3", "fp8_e5m2"} <= set(KV_CACHE_DTYPES)


def test_hardware_and_serving_do_not_import_airflow() -> None:
    code = ("import sys; import llmops.core.hardware, llmops.serving.vllm; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'airflow', 'kubernetes', 'mlflow'}); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT,
                   env={"PYTHONPATH": str(PROJECT_ROOT / "plugins")})


def test_relative_latency_tolerance_defaults_to_ten_percent_and_is_per_class() -> None:
    from llmops.config import settings as settings_mod

    configs = settings_mod.load().hardware_configs_dir
    assert load_hardware_class("h100x1", configs).slo.max_regression == 0.10
    # The shared-CPU class documents its larger run-to-run noise instead of hiding it in the gate.
    assert load_hardware_class("cpu", configs).slo.max_regression is None


# -- latency rounds on a shared-CPU class ------------------------------------------------------------


def test_gpu_classes_are_judged_on_a_single_measurement() -> None:
    for name in GPU_CLASSES:
        slo = load_hardware_class(name, CONFIGS).slo
        assert (slo.shared_cpu, slo.latency_rounds) == (False, 1), name


def test_the_embedded_cpu_class_declares_shared_cpu_and_an_odd_number_of_rounds() -> None:
    slo = load_hardware_class("cpu", CONFIGS).slo
    assert slo.shared_cpu is True
    assert slo.latency_rounds >= 3 and slo.latency_rounds % 2 == 1


def test_shared_cpu_class_with_rounds_loads(tmp_path: Path) -> None:
    data = _raw("cpu")
    data["slo"].update(shared_cpu=True, latency_rounds=3)
    slo = load_file(_write(tmp_path, data)).slo
    assert (slo.shared_cpu, slo.latency_rounds) == (True, 3)


def test_a_dedicated_cpu_class_may_leave_both_fields_out(tmp_path: Path) -> None:
    data = _raw("cpu")
    data["slo"].pop("shared_cpu", None)
    data["slo"].pop("latency_rounds", None)
    slo = load_file(_write(tmp_path, data)).slo
    assert (slo.shared_cpu, slo.latency_rounds) == (False, 1)


ROUND_ERROR_CASES = {
    "shared cpu with one round": ("cpu", {"shared_cpu": True, "latency_rounds": 1}, "slo.latency_rounds",
                                  "set latency_rounds to 3 or more"),
    "shared cpu with two rounds": ("cpu", {"shared_cpu": True, "latency_rounds": 2}, "slo.latency_rounds",
                                   "the median of 1 or 2 rounds is not robust"),
    "shared cpu left at the default round": ("cpu", {"shared_cpu": True, "latency_rounds": None},
                                             "slo.latency_rounds", "set latency_rounds to 3 or more"),
    "rounds without shared cpu": ("cpu", {"shared_cpu": False, "latency_rounds": 5}, "slo.latency_rounds",
                                  "set `shared_cpu: true`"),
    "rounds with shared cpu left out": ("cpu", {"shared_cpu": None, "latency_rounds": 5}, "slo.latency_rounds",
                                        "remove latency_rounds"),
    "shared cpu on a gpu class": ("h100x1", {"shared_cpu": True, "latency_rounds": 5}, "slo.shared_cpu",
                                  "a GPU class is judged on a single measurement"),
    "zero rounds": ("cpu", {"latency_rounds": 0}, "slo.latency_rounds", "greater than or equal to 1"),
    "too many rounds": ("cpu", {"shared_cpu": True, "latency_rounds": 16}, "slo.latency_rounds",
                        "less than or equal to 15"),
    "fractional rounds": ("cpu", {"shared_cpu": True, "latency_rounds": 4.5}, "slo.latency_rounds",
                          "write a whole number"),
    "quoted rounds": ("cpu", {"shared_cpu": True, "latency_rounds": "5"}, "slo.latency_rounds",
                      "without quotes"),
    "quoted shared cpu": ("cpu", {"shared_cpu": "yes", "latency_rounds": 5}, "slo.shared_cpu",
                          "write true or false without quotes"),
    "misspelt shared cpu": ("cpu", {"shared_cpus": True}, "slo.shared_cpus", "shared_cpu"),
}


@pytest.mark.parametrize("case", sorted(ROUND_ERROR_CASES))
def test_latency_round_errors_name_file_field_and_fix(tmp_path: Path, case: str) -> None:
    name, slo, field, fix_fragment = ROUND_ERROR_CASES[case]
    data = copy.deepcopy(_raw(name))
    for key, value in slo.items():
        if value is None:
            data["slo"].pop(key, None)
        else:
            data["slo"][key] = value
    path = _write(tmp_path, data)
    with pytest.raises(HardwareConfigError) as info:
        load_file(path)
    message = str(info.value)
    assert str(path) in message and info.value.file == str(path)
    assert f"{field}:" in message, message
    assert "fix:" in message and fix_fragment in message, message
    assert field in [f for f, _, _ in info.value.problems]


def test_new_slo_fields_left_at_default_keep_a_class_hash(tmp_path: Path) -> None:
    # Deployments pinned before the fields existed keep matching their class.
    before = load_hardware_class("h100x1", CONFIGS).config_hash
    data = _raw("h100x1")
    data["slo"].update(shared_cpu=False, latency_rounds=1)
    assert load_file(_write(tmp_path, data)).config_hash == before


def test_shared_cpu_rounds_change_the_hash(tmp_path: Path) -> None:
    data = _raw("cpu")
    data["slo"].update(shared_cpu=True, latency_rounds=3)
    three = load_file(_write(tmp_path, data)).config_hash
    data["slo"]["latency_rounds"] = 7
    assert load_file(_write(tmp_path, data)).config_hash != three
