"""Produce the `vllm bench serve` fixtures of tests/fixtures/bench/ with the real tool, through the
real benchmark pod job (local launcher: vLLM sidecar serving the tiny `good` checkpoint on the
`cpu` class, the benchmark client as the main container).

    PYTHONPATH=plugins .venv/bin/python bench/benchmarks_fixtures.py [--nights 4] [--out tests/fixtures/bench]

Writes, per night N, the raw result JSON of every workload of the cpu matrix
(`cpu-night<N>-<workload>.json`, per-request details included) and the pod's `return.json`
(`cpu-night<N>-return.json`); with `--regressed-max-num-seqs K`, one more pod whose server runs
with `--max-num-seqs K` (`cpu-maxseqs<K>-...`). It also prints, per workload, the throughput
ratio of the regressed server against the median of the nights (a same-run comparison).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
from pathlib import Path

from llmops.benchmarks import config, plan
from llmops.benchmarks.workloads import load_matrix
from llmops.config import settings as settings_mod
from llmops.core.hardware import load_hardware_class
from llmops.launch.local import LocalPodRunner


def run_pod(conf: settings_mod.Settings, overrides: list[str], workdir: Path) -> tuple[dict, Path]:
    bench_conf = config.load()
    hw = load_hardware_class("cpu", conf.hardware_configs_dir)
    matrix = load_matrix("cpu", bench_conf.matrices_dir)
    target = plan.default_target(bench_conf.model, bench_conf.default_model)
    job = plan.benchmark_pod_job(hw=hw, matrix=matrix, target=target, vllm_image=conf.vllm_image,
                                 jobs_image=conf.jobs_image, vllm_overrides=overrides)
    result = LocalPodRunner(conf, log=logging.getLogger("pod")).run(job, workdir)
    return result.xcom, workdir / "volumes" / "scratch" / "bench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=4)
    parser.add_argument("--regressed-max-num-seqs", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/bench"))
    parser.add_argument("--work", type=Path, default=Path(".data/bench-fixtures"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    conf = settings_mod.load()
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, list[str]]] = [(f"cpu-night{n}", []) for n in range(1, args.nights + 1)]
    if args.regressed_max_num_seqs:
        runs.append((f"cpu-maxseqs{args.regressed_max_num_seqs}", ["--max-num-seqs",
                                                                     str(args.regressed_max_num_seqs)]))
    throughput: dict[str, dict[str, float]] = {}
    for label, overrides in runs:
        xcom, raw_dir = run_pod(conf, overrides, args.work / label)
        (args.out / f"{label}-return.json").write_text(json.dumps(xcom, indent=1, sort_keys=True) + "\n")
        for entry in xcom["workloads"]:
            shutil.copy(raw_dir / f"{entry['name']}.json", args.out / f"{label}-{entry['name']}.json")
            throughput.setdefault(entry["name"], {})[label] = entry["metrics"]["request_throughput_rps"]
        print(label, {e["name"]: round(e["metrics"]["request_throughput_rps"], 1) for e in xcom["workloads"]})
    if args.regressed_max_num_seqs:
        regressed = f"cpu-maxseqs{args.regressed_max_num_seqs}"
        for name, values in throughput.items():
            nights = [v for k, v in values.items() if k != regressed]
            if not nights:  # --nights 0: nothing measured to compare with in this run
                continue
            ratio = values[regressed] / statistics.median(nights)
            print(f"{name}: regressed/baseline request throughput = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
