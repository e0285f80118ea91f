"""Workload matrices per hardware class and the `vllm bench serve` command line (pure)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from llmops.benchmarks.workloads import (
    Workload,
    WorkloadError,
    bench_serve_args,
    load_matrix,
    parse_matrix,
    workloads_to_json,
)
from llmops.config import settings
from llmops.core.hardware import load_all

ROOT = Path(__file__).resolve().parents[2]
MATRICES = ROOT / "include" / "benchmarks"
VALID = {
    "hardware_class": "x1",
    "num_prompts": 10,
    "matrix": [{"input_len": [32, 64], "output_len": [16], "request_rate": ["inf", 4], "max_concurrency": [8]}],
}


def parse(data: dict, name: str = "x1"):
    return parse_matrix(data, f"/m/{name}.yaml", name)


def test_every_hardware_class_has_a_valid_matrix() -> None:
    classes = load_all(settings.load().hardware_configs_dir)
    for name in classes:
        matrix = load_matrix(name, MATRICES)
        assert matrix.workloads, name
        rates = {w.request_rate for w in matrix.workloads}
        assert math.inf in rates, f"{name}: the matrix must include the unbounded rate (throughput ceiling)"
    assert {p.stem for p in MATRICES.glob("*.yaml")} == set(classes)


def test_blocks_are_crossed_in_order_and_named_stably() -> None:
    matrix = parse(VALID)
    assert [w.name for w in matrix.workloads] == [
        "in32-out16-rateinf-c8", "in32-out16-rate4-c8", "in64-out16-rateinf-c8", "in64-out16-rate4-c8"]
    assert all(w.num_prompts == 10 and w.ignore_eos for w in matrix.workloads)


def test_a_block_may_set_its_own_prompt_count() -> None:
    data = {**VALID, "matrix": [*VALID["matrix"], {"input_len": 512, "output_len": 256, "request_rate": 2,
                                                   "max_concurrency": 4, "num_prompts": 3}]}
    last = parse(data).workloads[-1]
    assert last.name == "in512-out256-rate2-c4" and last.num_prompts == 3


def test_the_hash_covers_every_field_but_the_name_does_not() -> None:
    w = Workload(input_len=32, output_len=16, request_rate=math.inf, max_concurrency=8, num_prompts=10)
    more = Workload(input_len=32, output_len=16, request_rate=math.inf, max_concurrency=8, num_prompts=20)
    assert w.name == more.name and w.workload_hash != more.workload_hash


def test_round_trip_through_json_keeps_infinity() -> None:
    import json

    workloads = parse(VALID).workloads
    back = [Workload.from_dict(d) for d in json.loads(workloads_to_json(workloads))]
    assert back == list(workloads)


@pytest.mark.parametrize("change, field, fragment", [
    ({"hardware_class": "other"}, "hardware_class", "does not match"),
    ({"num_prompts": 0}, "num_prompts", "whole number >= 1"),
    ({"num_prompts": True}, "num_prompts", "whole number >= 1"),
    ({"dataset": "sharegpt"}, "dataset", "not supported"),
    ({"ignore_eos": "yes"}, "ignore_eos", "true/false"),
    ({"matrix": []}, "matrix", "missing or empty"),
    ({"promts": 3}, "promts", "unknown key"),
    ({"regression": {"window": 0}}, "regression", "window"),
    ({"regression": {"treshold": 1}}, "regression", "treshold"),
    ({"matrix": [{"input_len": [32], "output_len": [16], "request_rate": [0], "max_concurrency": [1]}]},
     "matrix[0].request_rate", "rate > 0 or inf"),
    ({"matrix": [{"input_len": [32], "output_len": [16], "request_rate": [1]}]},
     "matrix[0].max_concurrency", "required key is missing"),
    ({"matrix": [{"input_len": [], "output_len": [16], "request_rate": [1], "max_concurrency": [1]}]},
     "matrix[0].input_len", "empty list"),
    ({"matrix": [{"input_len": [32], "output_len": [16], "request_rate": [1], "max_concurrency": [1],
                  "burst": 2}]}, "matrix[0].burst", "unknown key"),
    ({"matrix": [VALID["matrix"][0], VALID["matrix"][0]]}, "matrix", "more than once"),
])
def test_bad_matrices_name_the_file_the_field_and_the_fix(change: dict, field: str, fragment: str) -> None:
    with pytest.raises(WorkloadError) as err:
        parse({**VALID, **change})
    assert err.value.field == field
    assert str(err.value).startswith("/m/x1.yaml: ") and fragment in str(err.value) and "fix:" in str(err.value)


def test_a_missing_matrix_file_names_the_classes_that_have_one(tmp_path: Path) -> None:
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump({**VALID, "hardware_class": "cpu"}))
    with pytest.raises(WorkloadError, match=r"h100x1.yaml: \(file\): no workload matrix .* \['cpu'\]"):
        load_matrix("h100x1", tmp_path)
    (tmp_path / "bad.yaml").write_text("matrix: [")
    with pytest.raises(WorkloadError, match="not valid YAML"):
        load_matrix("bad", tmp_path)


def test_bench_serve_args_ask_for_every_percentile_goodput_and_details() -> None:
    w = parse(VALID).workloads[0]
    args = bench_serve_args(w, base_url="http://127.0.0.1:8000", served_model="m", tokenizer="/models/m",
                            result_dir="/scratch/bench", result_filename="x.json",
                            goodput_slo_ms={"ttft": 800.0, "tpot": 40.0})

    def value(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert value("--request-rate") == "inf" and value("--max-concurrency") == "8"
    assert value("--random-input-len") == "32" and value("--random-output-len") == "16"
    assert value("--percentile-metrics") == "ttft,tpot,itl,e2el" and value("--metric-percentiles") == "50,90,99"
    assert value("--backend") == "vllm" and value("--endpoint") == "/v1/completions"
    assert {"--save-result", "--save-detailed", "--ignore-eos"} <= set(args)
    assert args[args.index("--goodput") + 1:][:2] == ["ttft:800", "tpot:40"]
    paced = bench_serve_args(parse(VALID).workloads[1], base_url="u", served_model="m", tokenizer="t",
                             result_dir="d", result_filename="f")
    assert paced[paced.index("--request-rate") + 1] == "4" and "--goodput" not in paced
