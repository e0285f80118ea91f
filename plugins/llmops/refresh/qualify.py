"""The qualify gate of ``model_refresh`` around the pure :mod:`llmops.evals.gate`: load the eval
pods' per-item results from MLflow, judge every hardware class, log and tag the verdict; and
the canary's outcome check. Runs inside Airflow tasks (light I/O only).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmops.config.settings import Settings
from llmops.core.hardware import HardwareClass, load_hardware_class
from llmops.evals import gate as gates
from llmops.evals.evalset import load_evalset
from llmops.io import registry
from llmops.refresh.plan import EXPERIMENT


class GateFailed(RuntimeError):
    """The candidate did not qualify; the message lists each failing category or latency."""


def load_item_scores(run_id: str, revision: str, tokenizer_hash: str | None,
                     chat_template_hash: str | None) -> gates.ModelScores:
    """Per-item scores of an eval run, from its ``eval/eval_results.json`` artifact."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="eval/eval_results.json")
    rows = json.loads(Path(path).read_text())
    items = [gates.ItemScore(id=r["id"], category=r["category"], score=float(r["score"])) for r in rows]
    return gates.ModelScores(revision=revision, items=tuple(items), tokenizer_hash=tokenizer_hash,
                             chat_template_hash=chat_template_hash)


def judge_qualification(settings: Settings, *, model: str, candidate_version: str, evalset_config: str,
           results: list[dict[str, Any]], tracking_uri: str, max_drop: float | None = None,
           airflow_run_id: str | None = None) -> dict[str, Any]:
    """Run the qualify gate for every hardware class from the eval pods' results.

    Logs each verdict to MLflow (JSON + Markdown table, per-category deltas as metrics) once per
    Airflow run and class: a retried gate task finds the verdict run its first attempt finished
    and logs no second one;
    tags the candidate version ``qualified`` or ``rejected`` with the reasons (a rejected version
    also loses the ``challenger`` alias when it holds it), and raises :class:`GateFailed` when
    any class fails.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    reg = registry.ModelRegistry(tracking_uri)
    evalset = load_evalset(Path(evalset_config))
    categories = evalset.categories
    if max_drop is not None:
        categories = {name: replace(cfg, max_drop=max_drop) for name, cfg in categories.items()}
    candidate = reg.get(model, candidate_version)
    champion = reg.by_alias(model, registry.CHAMPION)
    if champion is not None and champion.version == candidate_version:
        champion = None  # re-qualifying the champion itself: judge it on absolute minimums
    verdicts: dict[str, Any] = {}
    by_class: dict[str, dict[str, dict[str, Any]]] = {}
    for result in results:
        by_class.setdefault(result["hardware_class"], {})[result["role"]] = result
    for hw_name, roles in sorted(by_class.items()):
        hw = load_hardware_class(hw_name, settings.hardware_configs_dir)
        cand = roles["candidate"]
        cand_scores = load_item_scores(cand["mlflow_run_id"], cand["evalset_revision"],
                                       candidate.tags.get("pin.tokenizer_hash"),
                                       candidate.tags.get("pin.chat_template_hash"))
        champ_scores = champ_latency = None
        if champion is not None and "champion" in roles:
            champ = roles["champion"]
            champ_scores = load_item_scores(champ["mlflow_run_id"], champ["evalset_revision"],
                                            champion.tags.get("pin.tokenizer_hash"),
                                            champion.tags.get("pin.chat_template_hash"))
            # A class too noisy for a relative latency check is judged on its SLO alone.
            champ_latency = _latency(hw, champ) if hw.slo.max_regression is not None else None
        verdict = gates.qualify(cand_scores, champ_scores, categories, _latency(hw, cand), champ_latency,
                                hw.slo, gates.GateOptions(latency_tolerance=hw.slo.max_regression or 0.0))
        verdicts[hw_name] = verdict
        _log_verdict(model, candidate_version, champion.version if champion else None, hw_name, verdict,
                     airflow_run_id)
    passed = all(v.passed for v in verdicts.values())
    reasons = [f"[{hw}] {reason}" for hw, v in verdicts.items() for reason in v.reasons if not v.passed]
    gate_tags = {"llmops.gate_reasons": "; ".join(reasons)[:4000] or "passed"}
    if passed:
        reg.tag(model, candidate_version, {registry.STATUS_TAG: "qualified", **gate_tags})
    else:
        # A rejected version must not stay the registry's challenger (the alias names what is being qualified).
        reg.reject(model, candidate_version, gate_tags)
    summary = {"passed": passed, "model": model, "candidate_version": candidate_version,
               "champion_version": champion.version if champion else None,
               "verdicts": {hw: v.to_dict() for hw, v in verdicts.items()}}
    if not passed:
        raise GateFailed(f"model {model} version {candidate_version} failed qualification:\n" + "\n".join(reasons))
    return summary


def _latency(hw: HardwareClass, result: dict[str, Any]) -> gates.LatencyMeasurement:
    """The eval pod's latency as the gate takes it: a single measurement, or the class's rounds.

    A shared-CPU class (``slo.latency_rounds`` > 1) needs the eval job's per-round p99s
    (``latency.rounds``, from ``--latency-rounds``); the gate judges their median.
    """
    latency = result.get("latency") or {}
    run = result.get("mlflow_run_id")
    wanted = hw.slo.latency_rounds
    rounds = latency.get("rounds") or []
    if wanted > 1 or len(rounds) > 1:
        if len(rounds) != wanted:
            raise GateFailed(f"[{hw.name}] eval run {run} measured latency in {len(rounds) or 1} round(s), but "
                             f"class {hw.name!r} declares slo.latency_rounds {wanted} "
                             f"({gates.latency_estimate(hw.slo)}): run the eval job with --latency-rounds {wanted}")
        for i, one in enumerate(rounds, start=1):
            missing = [name for name in gates.LATENCY_METRICS if name not in one]
            if missing:
                raise GateFailed(f"[{hw.name}] eval run {run} measured no {'/'.join(missing)} in latency round "
                                 f"{i} of {wanted}: cannot judge the latency gate")
        try:
            return gates.LatencyMeasurement.from_rounds(hw.name, rounds)
        except gates.GateInputError as exc:
            raise GateFailed(f"[{hw.name}] eval run {run}: {exc}: cannot judge the latency gate") from exc
    if "ttft_p99_ms" not in latency or "tpot_p99_ms" not in latency:
        raise GateFailed(f"[{hw.name}] eval run {run} measured no latency "
                         f"(ttft_p99_ms/tpot_p99_ms): cannot judge the latency gate")
    return gates.LatencyMeasurement(hardware_class=hw.name, ttft_p99_ms=latency["ttft_p99_ms"],
                                    tpot_p99_ms=latency["tpot_p99_ms"])


def _log_verdict(model: str, candidate_version: str, champion_version: str | None, hw_name: str,
                 verdict: gates.GateVerdict, airflow_run_id: str | None) -> None:
    import mlflow

    from llmops.io import tracking

    experiment_id = tracking.configure(None, EXPERIMENT)
    identity = {"llmops.stage": "gate", "model": model, "model_version": candidate_version,
                "hardware_class": hw_name, **({"airflow_run_id": airflow_run_id} if airflow_run_id else {})}
    if airflow_run_id and tracking.finished_run(experiment_id, identity) is not None:
        return  # this run's verdict for this class is already logged: a retry adds nothing
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"gate {model} v{candidate_version} {hw_name}"):
        mlflow.set_tags({**identity, "champion_version": champion_version or "none",
                         "passed": str(verdict.passed).lower(), "latency_estimate": verdict.latency_estimate})
        mlflow.log_metrics({f"delta/{row.category}": row.delta for row in verdict.categories
                            if row.delta is not None})
        mlflow.log_dict(verdict.to_dict(), "gate/verdict.json")
        mlflow.log_text(verdict.to_markdown(), "gate/verdict.md")


def check_canary(model: str, candidate_version: str, result: dict[str, Any] | None,
                 tracking_uri: str) -> dict[str, Any] | None:
    """Fail the run when the canary rolled back: the version is tagged ``rejected`` with the
    reasons and loses the ``challenger`` alias when it holds it."""
    if result is None:
        return None
    if result.get("outcome") == "rolled_back":
        reasons = "; ".join(result.get("reasons", [])) or "canary analysis failed"
        # Rejected like at the gate: tagged with the reasons, and no longer the challenger.
        registry.ModelRegistry(tracking_uri).reject(model, candidate_version, {
            "llmops.canary_reasons": reasons[:4000],
            "llmops.breach_to_rollback_s": str(result.get("breach_to_rollback_s"))})
        raise GateFailed(f"canary of {model} version {candidate_version} rolled back to 0% "
                         f"(breach to rollback {result.get('breach_to_rollback_s')} s): {reasons}")
    return result
