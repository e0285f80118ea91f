"""Task logic of the ``nightly_benchmarks`` and ``benchmark_change_watcher`` DAGs (light I/O only).

Heavy work (serving, benchmarking) runs in the pod jobs planned here; what is here reads the
registry to know what is served, records the pods' results in MLflow and turns them into a
verdict through the pure :mod:`llmops.benchmarks.regression`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmops.benchmarks import plan, recording
from llmops.benchmarks.config import BenchmarkSettings
from llmops.benchmarks.regression import Policy
from llmops.benchmarks.workloads import load_matrix
from llmops.config.settings import Settings
from llmops.core.hardware import load_hardware_class
from llmops.io import registry

JOBS_KEY_PREFIX = "jobs__"


class BenchmarkCheckFailed(RuntimeError):
    """A class regressed or failed to run; the message names each (class, model, workload)."""


def jobs_key(group: str) -> str:
    """The planning task's XCom key holding the pod jobs of one pool group."""
    return f"{JOBS_KEY_PREFIX}{group}"


def served_targets(reg: registry.ModelRegistry, model: str, bench: BenchmarkSettings,
                   include_challenger: bool) -> list[dict[str, str]]:
    """Champion (or the configured default checkpoint when there is none) and the challenger, if any."""
    from llmops.serving.weights import model_dir, version_target

    targets: list[dict[str, str]] = []
    champion = reg.by_alias(model, registry.CHAMPION)
    versions = [("champion", champion)]
    if include_challenger:
        challenger = reg.by_alias(model, registry.CHALLENGER)
        if challenger is not None and (champion is None or challenger.version != champion.version):
            versions.append(("challenger", challenger))
    for role, version in versions:
        if version is None:
            continue
        digest = version.tags[registry.WEIGHT_DIGEST_TAG]
        target = plan.registry_target(role, model, version.version, version.source, digest,
                                      model_dir(model, digest), version.tags.get("llmops.model_family"))
        # A registered version is benchmarked on the runtime it is pinned to, never the platform default.
        target["runtime_image"] = version_target(role, version)["runtime_image"]
        targets.append(target)
    if champion is None:
        targets.insert(0, plan.default_target(model, bench.default_model))
    return targets


def plan_night(settings: Settings, bench: BenchmarkSettings, *, classes: Sequence[str], model: str,
               include_challenger: bool, vllm_overrides: Sequence[str], tracking_uri: str,
               s3_endpoint: str | None, groups: Sequence[str]) -> dict[str, Any]:
    """The night's pod jobs, filed by pool group, plus what was planned and what was skipped (and why)."""
    from llmops.serving.weights import fetch_container

    reg = registry.ModelRegistry(tracking_uri)
    targets = served_targets(reg, model, bench, include_challenger)
    planned: dict[str, Any] = {jobs_key(g): [] for g in groups}
    runs: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for name in classes:
        hw = load_hardware_class(name, settings.hardware_configs_dir)
        matrix = load_matrix(name, bench.matrices_dir)
        key = jobs_key(plan.pool_group(hw))
        if key not in planned:
            raise ValueError(f"hardware class {name} (pool group {plan.pool_group(hw)}) has no benchmark task: "
                             f"the DAG was parsed with groups {sorted(groups)}; let the DAG file be re-parsed")
        for target in targets:
            reason = plan.family_mismatch(hw, target)
            if reason:
                skipped.append({"hardware_class": name, "model": target["model"], "version": target["version"],
                                "reason": reason})
                continue
            fetch = fetch_container(settings, target, model, s3_endpoint) if "weights_uri" in target else None
            # The default checkpoint (no champion yet) is no version: it runs the platform's runtime.
            image = target.get("runtime_image") or settings.vllm_image
            job = plan.benchmark_pod_job(hw=hw, matrix=matrix, target=target, vllm_image=image,
                                         jobs_image=settings.jobs_image, fetch=fetch, vllm_overrides=vllm_overrides)
            planned[key].append(job.to_dict())
            runs.append({"hardware_class": name, "role": target["role"], "model": target["model"],
                         "version": target["version"], "model_key": target["model_key"], "pod": job.name,
                         "model_label": f"{target['model']}@{target['version']}"})
    return {**planned, "targets": runs, "skipped": skipped}


def failed_targets(targets: Sequence[Mapping[str, str]], results: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Planned (class, model) pods that returned no result: the pod failed (error, OOM, timeout)."""
    produced = {(r.get("hardware_class"), (r.get("target") or {}).get("model_key"),
                 (r.get("target") or {}).get("role")) for r in results}
    return [dict(t) for t in targets if (t["hardware_class"], t["model_key"], t["role"]) not in produced]


def record_and_judge(bench: BenchmarkSettings, *, targets: Sequence[Mapping[str, str]],
                     results: Sequence[Mapping[str, Any] | None], tracking_uri: str, airflow_run_id: str,
                     trigger: str, skipped: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """Record every workload run in MLflow, judge each against its class's history, log the summary."""
    produced = [r for r in results if r]
    recorded = recording.record(produced, tracking_uri=tracking_uri, airflow_run_id=airflow_run_id, trigger=trigger)
    policies = {name: Policy.from_dict(load_matrix(name, bench.matrices_dir).regression)
                for name in sorted({r["hardware_class"] for r in produced})}
    rows = recording.judge_night(recorded, policies, tracking_uri=tracking_uri)
    report = recording.log_summary(rows, failed_targets(targets, produced), tracking_uri=tracking_uri,
                                   airflow_run_id=airflow_run_id, trigger=trigger)
    return {**report, "skipped": list(skipped)}


def check(report: Mapping[str, Any] | None) -> dict[str, Any]:
    """The final verdict of the night: raise :class:`BenchmarkCheckFailed` naming regressions and failures."""
    if not report:
        raise BenchmarkCheckFailed("no benchmark report: the record step failed (see its log); "
                                   "nothing was judged")
    if not report["passed"]:
        raise BenchmarkCheckFailed(report["message"])
    return {"passed": True, "message": report["message"], "summary_run_id": report["summary_run_id"]}


def trigger_of(run_type: str | None) -> str:
    """``scheduled`` / ``asset_triggered`` / ``manual`` from a DAG run's type."""
    value = str(run_type or "manual").lower()
    for kind in ("scheduled", "asset", "manual", "backfill"):
        if kind in value:
            return "asset_triggered" if kind == "asset" else kind
    return value
