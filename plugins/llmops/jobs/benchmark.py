"""Pod job: run a hardware class's workload matrix against the vLLM sidecar with ``vllm bench serve``.

Runs as the main container of a serving pod, in the vLLM runtime image (the benchmark client
is vLLM's own), beside vLLM serving the model with the class's config::

    python -m llmops.jobs.benchmark --workloads '[{...}, ...]' --served-model tiny-chat \\
        --tokenizer /models/tiny-chat/good --goodput ttft:1000 tpot:100 --target '{"role": "champion", ...}'

Each workload is one ``vllm bench serve`` process writing its JSON result; the job parses it
(:mod:`llmops.benchmarks.results`) and returns every workload's metrics and the tool's summary
in ``return.json``. A workload that fails is reported as failed and the others still run; the
job exits non-zero only when no workload produced a result (the server is down, the pod is out
of memory): the DAG then reports the class as failed, without blocking other classes.

Standard library only (plus the ``vllm`` CLI on PATH; the health wait is
:func:`llmops.io.openai_client.wait_healthy`, standard library too): MLflow is not in the vLLM
image, so the DAG's record task logs the runs from this result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from llmops.benchmarks import results
from llmops.benchmarks.workloads import Workload, bench_serve_args
from llmops.io import openai_client
from llmops.jobs.common import optional_env, setup_logging, write_result

log = setup_logging("llmops.jobs.benchmark")

EXIT_NO_RESULT = 2
HEALTH_TIMEOUT_S = 600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", required=True, help="JSON list of workloads (llmops.benchmarks.workloads)")
    parser.add_argument("--served-model", required=True, help="the model name the vLLM server answers to")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (the served model's folder)")
    parser.add_argument("--base-url", default=None, help="default http://127.0.0.1:$VLLM_PORT")
    parser.add_argument("--goodput", nargs="*", default=[], metavar="KEY:MS",
                        help="SLOs goodput is judged against, e.g. ttft:800 tpot:40")
    parser.add_argument("--target", default="{}", help="JSON: what is served (role, model, version, model_key)")
    parser.add_argument("--result-dir", type=Path, default=Path(optional_env("TMPDIR") or "/tmp") / "bench",
                        help="where each workload's raw JSON is written")
    parser.add_argument("--workload-timeout-s", type=int, default=1800)
    parser.add_argument("--vllm-overrides", default="[]",
                        help="JSON list of vLLM flags this run's server got on top of the class config (what-if)")
    return parser.parse_args(argv)


def parse_slo(pairs: list[str]) -> dict[str, float]:
    """``["ttft:800", "tpot:40"]`` -> ``{"ttft": 800.0, "tpot": 40.0}``."""
    slo: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep:
            raise SystemExit(f"--goodput {pair!r}: expected KEY:MILLISECONDS, e.g. ttft:800")
        slo[key] = float(value)
    return slo


def runtime_version() -> str:
    """The vLLM version this image carries (what the sidecar serves with)."""
    try:
        return metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_workload(workload: Workload, *, base_url: str, served_model: str, tokenizer: str, result_dir: Path,
                 slo: dict[str, float], timeout_s: int) -> dict[str, Any]:
    """One ``vllm bench serve`` run; its parsed result, or the reason it failed."""
    filename = f"{workload.name}.json"
    args = bench_serve_args(workload, base_url=base_url, served_model=served_model, tokenizer=tokenizer,
                            result_dir=str(result_dir), result_filename=filename, goodput_slo_ms=slo)
    entry: dict[str, Any] = {"name": workload.name, "workload": workload.to_dict(),
                             "workload_hash": workload.workload_hash}
    log.info("workload %s: vllm bench serve %s", workload.name, " ".join(args))
    started = time.monotonic()
    try:
        proc = subprocess.run(["vllm", "bench", "serve", *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**entry, "status": "failed", "error": f"vllm bench serve exceeded {timeout_s}s"}
    except OSError as exc:  # no `vllm` on PATH: the main container is not running the vLLM image
        return {**entry, "status": "failed", "error": f"cannot run vllm bench serve: {exc}"}
    for line in (proc.stdout + proc.stderr).splitlines()[-40:]:
        log.info("[bench %s] %s", workload.name, line)
    entry["wall_s"] = round(time.monotonic() - started, 3)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {**entry, "status": "failed", "error": f"vllm bench serve exited {proc.returncode}: {' | '.join(tail)}"}
    try:
        parsed = results.load(result_dir / filename, slo)
    except (FileNotFoundError, results.BenchResultError) as exc:
        return {**entry, "status": "failed", "error": str(exc)}
    if parsed.metrics.get("completed", 0) == 0:
        return {**entry, "status": "failed", "error": "no request completed", **parsed.to_dict()}
    return {**entry, "status": "ok", **parsed.to_dict()}


def main(argv: list[str] | None = None) -> int:
    """Run every workload; exit 0 when at least one produced a result."""
    args = parse_args(argv)
    base_url = args.base_url or f"http://127.0.0.1:{optional_env('VLLM_PORT')}"
    workloads = [Workload.from_dict(w) for w in json.loads(args.workloads)]
    slo = parse_slo(args.goodput)
    args.result_dir.mkdir(parents=True, exist_ok=True)
    try:
        # The sidecar's probe normally already passed; vLLM may still be loading the weights.
        waited = openai_client.wait_healthy(base_url, timeout_s=HEALTH_TIMEOUT_S)
    except openai_client.ServerError as exc:
        raise SystemExit(f"vLLM at {base_url} did not become healthy: {exc}") from exc
    log.info("server %s healthy after %.1fs; %d workload(s)", base_url, waited, len(workloads))
    entries = [run_workload(w, base_url=base_url, served_model=args.served_model, tokenizer=args.tokenizer,
                            result_dir=args.result_dir, slo=slo, timeout_s=args.workload_timeout_s)
               for w in workloads]
    result = {
        "hardware_class": optional_env("LLMOPS_HARDWARE_CLASS"),
        "config_hash": optional_env("LLMOPS_HARDWARE_CONFIG_HASH"),
        "runtime_version": runtime_version(),
        "runtime_image": (optional_env("LLMOPS_RUNTIME_IMAGE") or ""),
        "target": json.loads(args.target),
        "served_model": args.served_model,
        "goodput_slo_ms": slo,
        "vllm_overrides": json.loads(args.vllm_overrides),
        "finished_at": time.time(),
        "workloads": entries,
    }
    write_result(result)
    ok = [e["name"] for e in entries if e["status"] == "ok"]
    failed = {e["name"]: e.get("error") for e in entries if e["status"] != "ok"}
    log.info("workloads ok: %s; failed: %s", ok, failed or "none")
    if not ok:
        log.error("no workload produced a result")
        return EXIT_NO_RESULT
    return 0


if __name__ == "__main__":
    sys.exit(main())
