"""Cold parse time of each DAG file under both launchers, and the heavy modules it imports.

Airflow's dag-processor parses every DAG file again and again, each time in a fresh process
forked from one that has imported Airflow: whatever a DAG file imports at top level (and
whatever the operators it builds import) is paid on every parse. For each launcher
(``LLMOPS_LAUNCHER=local`` and ``kubernetes``) each DAG file is parsed in a fresh child
process, forked (as the dag-processor does) from an interpreter that has imported Airflow
(about 3 s: the baseline no DAG file avoids, not timed); the child builds a ``DagBag`` of that
single file, and the time of that is the file's cold parse time. An empty DAG file is parsed
the same way as the baseline. Each measurement is the median of ``--repeat`` runs; a file's two
launchers are parsed one right after the other, so load on a shared machine hits both alike.

It prints, per file, both launchers' times, each against the empty file, and the ratio
kubernetes/local, and exits non-zero when a file's ratio exceeds 2.0, a file fails to import,
or parsing a file imports a heavy module (:data:`HEAVY`) into ``sys.modules``. Heavy modules
that Airflow's own provider discovery imports are listed apart and do not fail the run: any
Asset URI with a scheme other than ``file`` or ``x-...`` makes Airflow load every provider's
URI normaliser, and the Amazon provider's imports boto3.

    PYTHONPATH=plugins .venv/bin/python bench/dag_parse.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS_DIR = ROOT / "dags"
HEAVY = ("mlflow", "great_expectations", "datasets", "pandas", "vllm", "torch", "transformers",
         "boto3", "botocore", "kubernetes", "airflow.providers.cncf.kubernetes")
LAUNCHERS = ("local", "kubernetes")
MAX_RATIO = 2.0
# The kubernetes launcher refuses images not pinned by digest, at parse time: stand-ins for
# the production digests (used only when the environment sets none).
PLACEHOLDER_IMAGES = {
    "LLMOPS_VLLM_IMAGE": "docker.io/vllm/vllm-openai@sha256:" + "0" * 64,
    "LLMOPS_JOBS_IMAGE": "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "0" * 64,
}

EMPTY_DAG = '''
from airflow.sdk import DAG
with DAG("empty", schedule=None):
    pass
'''

# Runs in a fresh interpreter: imports Airflow once, then forks one child per (DAG file, launcher).
PARSER = r"""
import json, os, sys, time

import airflow.sdk  # noqa: F401  the baseline every DAG file pays
from airflow.dag_processing.dagbag import DagBag

HEAVY = json.loads(sys.argv[1])
AIRFLOW_DISCOVERY = ("providers_manager.py", "providers_manager_runtime.py")


def heavy_of(name):
    return next((h for h in HEAVY if name == h or name.startswith(h + ".")), None)


class FirstImports:
    # Who imports each heavy module first: Airflow's provider discovery, or the DAG file.
    def __init__(self):
        self.by = {}

    def find_spec(self, name, path=None, target=None):
        heavy = heavy_of(name)
        if heavy and heavy not in self.by:
            frame, via = sys._getframe(1), "dag"
            while frame is not None:
                if frame.f_code.co_filename.endswith(AIRFLOW_DISCOVERY):
                    via = "airflow"
                    break
                frame = frame.f_back
            self.by[heavy] = via
        return None


def parse(path):
    watch = FirstImports()
    sys.meta_path.insert(0, watch)
    before = set(sys.modules)
    started = time.perf_counter()
    bag = DagBag(dag_folder=path)
    seconds = time.perf_counter() - started
    heavy = sorted({h for h in map(heavy_of, set(sys.modules) - before) if h})
    return {"seconds": seconds, "dags": len(bag.dags),
            "errors": {os.path.basename(f): str(e).strip().splitlines()[-1:] for f, e in bag.import_errors.items()},
            "heavy": {h: watch.by.get(h, "dag") for h in heavy}}


for path, launcher in json.loads(sys.argv[2]):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh process for this file, as the dag-processor's
        os.close(read_end)
        os.environ["LLMOPS_LAUNCHER"] = launcher  # read when the DAG file builds its tasks
        try:
            result = parse(path)
        except BaseException as exc:  # report, never fall back into the parent's loop
            result = {"seconds": 0.0, "dags": 0, "errors": {"parse": [repr(exc)]}, "heavy": {}}
        with os.fdopen(write_end, "w") as out:
            out.write(json.dumps(result))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    result = json.loads(data) if data else {"seconds": 0.0, "dags": 0, "errors": {"parse": ["no result"]}, "heavy": {}}
    print("RESULT " + json.dumps({"path": path, "launcher": launcher, **result}), flush=True)
"""


@dataclass
class Parse:
    """One DAG file under one launcher: parse times of every run, what it imported, errors."""

    seconds: list[float] = field(default_factory=list)
    dags: int = 0
    errors: dict[str, list[str]] = field(default_factory=dict)
    heavy: dict[str, str] = field(default_factory=dict)  # module -> "dag" | "airflow"

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def heavy_by_dag(self) -> list[str]:
        """Heavy modules the DAG file (or the library it uses) imported: these fail."""
        return sorted(m for m, by in self.heavy.items() if by != "airflow")

    @property
    def heavy_by_airflow(self) -> list[str]:
        """Heavy modules Airflow's own provider discovery imported while parsing the file."""
        return sorted(m for m, by in self.heavy.items() if by == "airflow")


def parser_env(airflow_home: str | None = None) -> dict[str, str]:
    """The environment of the parsing interpreter (each child sets ``LLMOPS_LAUNCHER``)."""
    env = dict(os.environ)
    env["LLMOPS_LAUNCHER"] = LAUNCHERS[0]  # valid while Airflow is imported; set per child
    for name, image in PLACEHOLDER_IMAGES.items():
        env.setdefault(name, image)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "plugins"), env.get("PYTHONPATH")]))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    if airflow_home and "AIRFLOW_HOME" not in env:  # never write an airflow.cfg into ~/airflow
        env["AIRFLOW_HOME"] = airflow_home
    return env


def parse_cold(paths: Sequence[Path], launchers: Sequence[str] = LAUNCHERS,
               results: dict[str, dict[str, Parse]] | None = None, *, airflow_home: str | None = None,
               timeout_s: float = 900) -> dict[str, dict[str, Parse]]:
    """Parse each of ``paths`` once per launcher, each in a fresh child process.

    Returns (or adds to) ``results[launcher][file name]``. A file's launchers are parsed one
    right after the other, in the order given.
    """
    results = {} if results is None else results
    jobs = [(str(path), launcher) for path in paths for launcher in launchers]
    with tempfile.TemporaryDirectory(prefix="dag-parse-home-") as home:
        proc = subprocess.run([sys.executable, "-c", PARSER, json.dumps(HEAVY), json.dumps(jobs)],
                              capture_output=True, text=True, cwd=ROOT, timeout=timeout_s,
                              env=parser_env(airflow_home or home))
    lines = [line[len("RESULT "):] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or len(lines) != len(jobs):
        raise RuntimeError(f"parsing the DAG files failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    for line in lines:
        data = json.loads(line)
        parse = results.setdefault(data["launcher"], {}).setdefault(Path(data["path"]).name, Parse())
        parse.seconds.append(data["seconds"])
        parse.dags = data["dags"]
        parse.errors.update(data["errors"])
        parse.heavy.update(data["heavy"])
    return results


def dag_files() -> list[Path]:
    return sorted(DAGS_DIR.glob("*.py"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args()
    files = dag_files()
    with tempfile.TemporaryDirectory(prefix="dag-parse-") as tmp:
        empty = Path(tmp) / "empty_dag.py"
        empty.write_text(EMPTY_DAG)
        per_launcher: dict[str, dict[str, Parse]] = {}
        for run in range(args.repeat):  # which launcher goes first alternates too
            parse_cold([empty, *files], LAUNCHERS[::-1] if run % 2 else LAUNCHERS, per_launcher, airflow_home=tmp)
    base = {launcher: per_launcher[launcher].pop(empty.name) for launcher in LAUNCHERS}

    print(f"Cold parse, a fresh process per DAG file (median of {args.repeat}; Airflow imported beforehand)")
    print(f"{'empty DAG file (baseline)':<32} " + "  ".join(
        f"{launcher} {base[launcher].median * 1000:.1f} ms" for launcher in LAUNCHERS))
    print(f"{'DAG file':<32} {'local ms':>9} {'x empty':>8} {'k8s ms':>9} {'x empty':>8} "
          f"{'k8s/local':>10}  heavy imports")
    failures: list[str] = []
    by_airflow: dict[str, set[str]] = {}
    for path in files:
        local, kube = per_launcher["local"][path.name], per_launcher["kubernetes"][path.name]
        ratio = kube.median / local.median if local.median else float("inf")
        heavy = sorted({*local.heavy_by_dag, *kube.heavy_by_dag})
        for parse in (local, kube):
            for module in parse.heavy_by_airflow:
                by_airflow.setdefault(module, set()).add(path.name)
        print(f"{path.name:<32} {local.median * 1000:>9.1f} {local.median / base['local'].median:>8.1f} "
              f"{kube.median * 1000:>9.1f} {kube.median / base['kubernetes'].median:>8.1f} {ratio:>10.2f}  "
              f"{', '.join(heavy) or '-'}")
        if ratio > MAX_RATIO:
            failures.append(f"{path.name}: kubernetes parse is {ratio:.2f}x local (limit {MAX_RATIO})")
        for launcher, parse in (("local", local), ("kubernetes", kube)):
            if parse.heavy_by_dag:
                failures.append(f"{path.name} ({launcher}): imports {', '.join(parse.heavy_by_dag)} at parse time; "
                                f"import them inside tasks or at execute time")
            if parse.errors or not parse.dags:
                failures.append(f"{path.name} ({launcher}): import errors {parse.errors or 'no DAG found'}")
    for module, names in sorted(by_airflow.items()):
        print(f"note: {module} is imported by Airflow's provider discovery (asset URI normalisers), "
              f"not by the DAG file: {', '.join(sorted(names))}")
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
