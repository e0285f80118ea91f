"""Parse time of each DAG file, cold, in a fresh interpreter per file.

Airflow's dag-processor re-parses every file constantly, so top-level imports
are paid over and over. For each file this prints the time to import it in a
fresh interpreter with Airflow already imported (the baseline a DAG file cannot
avoid) and the ratio to an empty DAG file measured in the same run. It also
fails if a DAG file pulls a heavy module (mlflow, great_expectations, datasets,
pandas, vllm, torch) into ``sys.modules`` at parse time.

    PYTHONPATH=plugins .venv/bin/python bench/dag_parse.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("mlflow", "great_expectations", "datasets", "pandas", "vllm", "torch", "transformers")

PROBE = r"""
import importlib.util, json, sys, time
import airflow.sdk  # the unavoidable baseline: every DAG file imports Airflow
before = set(sys.modules)
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.perf_counter() - t0
heavy = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(json.loads(sys.argv[2])))
print(json.dumps({"seconds": elapsed, "heavy": heavy}))
"""

EMPTY_DAG = '''
from airflow.sdk import DAG
with DAG("empty", schedule=None):
    pass
'''


def measure(path: Path, repeat: int) -> tuple[float, list[str]]:
    """Median import seconds of ``path`` over ``repeat`` fresh interpreters, and heavy modules seen."""
    times, heavy = [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE, str(path), json.dumps(HEAVY)], check=True,
                             capture_output=True, text=True, cwd=ROOT).stdout.strip().splitlines()[-1]
        result = json.loads(out)
        times.append(result["seconds"])
        heavy = result["heavy"]
    return statistics.median(times), heavy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty_dag.py"
        empty.write_text(EMPTY_DAG)
        baseline, _ = measure(empty, args.repeat)
    print(f"baseline (empty DAG file): {baseline * 1000:.1f} ms")
    print(f"{'DAG file':<36} {'parse ms':>9} {'x empty':>8}  heavy imports")
    failed = False
    for path in sorted((ROOT / "dags").glob("*.py")):
        seconds, heavy = measure(path, args.repeat)
        failed |= bool(heavy)
        print(f"{path.name:<36} {seconds * 1000:>9.1f} {seconds / baseline:>8.1f}  {', '.join(heavy) or '-'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
