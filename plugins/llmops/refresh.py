"""Task logic of the ``model_refresh`` DAG that runs inside Airflow (light I/O, no heavy work).

Heavy work (verifying, copying, serving, evaluating) runs in pod jobs; what is here
plans those pod jobs from run-time facts (the staged version, the current champion)
and turns their results into decisions through the pure gate in :mod:`llmops.gates`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC
from pathlib import Path
from typing import Any

from llmops import gates, podjobs, registry
from llmops.evals.evalset import load_evalset
from llmops.hardware import HardwareClass, load_hardware_class
from llmops.pods import Container, PodJob, Resources, SecretEnv
from llmops.settings import Settings

EXPERIMENT = "llmops-refresh"
S3_SECRET = "llmops-s3"
MODEL_CACHE = "/models"


class GateFailed(RuntimeError):
    """The candidate did not qualify; the message lists each failing category or latency."""


def s3_secret_env() -> dict[str, SecretEnv]:
    """S3 credentials of a pod, from the ``llmops-s3`` Kubernetes Secret."""
    return {key: SecretEnv(S3_SECRET, key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


# Rendered at run time from the Airflow connection (pods never see Airflow itself).
S3_ENDPOINT_TEMPLATE = "{{ conn.llmops_s3.extra_dejson.get('endpoint_url', '') }}"


def receive_job(settings: Settings) -> PodJob:
    """Verify the drop named by ``params.drop_uri`` (quarantine it when anything is wrong)."""
    return PodJob(name="receive", main=with_s3_secrets(podjobs.jobs_container(
        settings, "receive", ["--drop-uri", "{{ params.drop_uri }}", "--experiment", EXPERIMENT],
        env={"AWS_ENDPOINT_URL": S3_ENDPOINT_TEMPLATE}, resources=Resources(cpu="2", memory="2Gi"),
    )), timeout_s=3600)


def stage_job(settings: Settings) -> PodJob:
    """Stage the received drop content-addressed, pin it, register it as ``challenger``."""
    args = ["--drop-uri", "{{ params.drop_uri }}", "--registered-model", "{{ params.model }}",
            "--hardware-classes", "{{ params.hardware_classes | join(',') }}",
            "--models-bucket", "{{ var.value.llmops_bucket_models }}",
            # S3 refuses to copy an object that changed after receive verified it.
            "--source-etags", "{{ ti.xcom_pull(task_ids='receive')['etags'] | tojson }}",
            "--experiment", EXPERIMENT]
    if settings.vllm_version:
        args += ["--runtime-version", settings.vllm_version]
    return PodJob(name="stage", main=with_s3_secrets(podjobs.jobs_container(
        settings, "stage", args,
        env={"AWS_ENDPOINT_URL": S3_ENDPOINT_TEMPLATE}, resources=Resources(cpu="2", memory="2Gi"),
    )), timeout_s=3600)


def with_s3_secrets(container: Container) -> Container:
    """The same container with the S3 Secret's keys as env."""
    return replace(container, secret_env={**container.secret_env, **s3_secret_env()})


def plan_qualification(settings: Settings, hw_name: str, *, selected: list[str], model: str,
                       stage_result: dict[str, Any], evalset_config: str) -> list[dict[str, Any]]:
    """Pod jobs qualifying the staged candidate (and the champion, for a paired comparison) on ``hw_name``.

    Returns [] when the class is not among the run's target classes.
    """
    from airflow.sdk import BaseHook

    if hw_name not in selected:
        return []
    tracking_uri = BaseHook.get_connection("llmops_mlflow").host
    s3_endpoint = BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url")
    reg = registry.ModelRegistry(tracking_uri)
    targets = [{"role": "candidate", "version": str(stage_result["model_version"]),
                "weights_uri": stage_result["weights_uri"], "weight_digest": stage_result["weight_digest"]}]
    champion = champion_target(reg, model)
    if champion is not None and champion["version"] != targets[0]["version"]:
        targets.append(champion)
    hw = load_hardware_class(hw_name, settings.hardware_configs_dir)
    return qualification_jobs(settings, hw, model=model, targets=targets, evalset_config=evalset_config,
                              s3_endpoint=s3_endpoint, tracking_uri=tracking_uri)


def promote(settings: Settings, *, model: str, version: str, run_id: str, tracking_uri: str,
            s3_endpoint: str | None, models_bucket: str) -> dict[str, Any]:
    """Move ``champion``/``previous``, and write ``deployments/<model>/current.json`` with its history."""
    reg = registry.ModelRegistry(tracking_uri)
    moved = reg.promote(model, version)
    record = _deployment_record(reg, model, moved["champion"], run_id, action="promote")
    reg.tag(model, version, {registry.STATUS_TAG: "champion", "llmops.promoted_by": run_id})
    _write_current(s3_endpoint, models_bucket, model, record)
    return {**moved, "deployment": record, "serving": _serve(settings, record, reason="promote")}


def rollback(settings: Settings, *, model: str, run_id: str, tracking_uri: str, s3_endpoint: str | None,
             models_bucket: str) -> dict[str, Any]:
    """``champion`` back to ``previous`` in one step, recorded in ``current.json``'s history.

    Idempotent per run: a retried task whose alias move already happened (the version it
    rolled back carries this run's id) only rewrites ``current.json``.
    """
    reg = registry.ModelRegistry(tracking_uri)
    previous = reg.by_alias(model, registry.PREVIOUS)
    if previous is not None and previous.tags.get("llmops.rolled_back_by") == run_id:
        champion = reg.by_alias(model, registry.CHAMPION)
        moved = {"champion": champion.version if champion else None, "rolled_back": previous.version}
    else:
        moved = reg.rollback(model)
        reg.tag(model, moved["rolled_back"], {registry.STATUS_TAG: "rolled_back", "llmops.rolled_back_by": run_id})
    record = _deployment_record(reg, model, moved["champion"], run_id, action="rollback")
    _write_current(s3_endpoint, models_bucket, model, record)
    return {**moved, "deployment": record, "serving": _serve(settings, record, reason="rollback")}


def _serve(settings: Settings, record: dict[str, Any], reason: str) -> dict[str, Any]:
    """The serving route follows the registry: ``<model>-stable`` rolled to the record's version."""
    from llmops.serving_route import serve_champion

    return serve_champion(settings, record["model"], version=record["version"], weights_uri=record["weights_uri"],
                          weight_digest=record["pins"].get("weight_digest", ""), reason=reason)


def claim_model(model: str, run_id: str, holder_alive: Any) -> tuple[bool, str]:
    """Take ``model``'s refresh lease in the models bucket (see :mod:`llmops.model_lock`)."""
    from llmops import model_lock

    s3, bucket = _models_bucket()
    return model_lock.acquire(s3, bucket, model, run_id, holder_alive)


def release_model(model: str, run_id: str) -> bool:
    """Give ``model``'s refresh lease back if this run holds it."""
    from llmops import model_lock

    s3, bucket = _models_bucket()
    return model_lock.release(s3, bucket, model, run_id)


def _models_bucket() -> tuple[Any, str]:
    """An S3 client from the ``llmops_s3`` connection and the models bucket (inside a task)."""
    from airflow.sdk import BaseHook, Variable

    endpoint = BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url")
    return _s3_client(endpoint), Variable.get("llmops_bucket_models")


def _deployment_record(reg: registry.ModelRegistry, model: str, version: str, run_id: str,
                       action: str) -> dict[str, Any]:
    from datetime import datetime

    champion = reg.get(model, version)
    pins = {k.removeprefix(registry.PIN_PREFIX): v for k, v in champion.tags.items()
            if k.startswith(registry.PIN_PREFIX)}
    return {"model": model, "version": version, "weights_uri": champion.source, "pins": pins, "action": action,
            "airflow_run_id": run_id, "at": datetime.now(UTC).isoformat()}


def _write_current(s3_endpoint: str | None, bucket: str, model: str, record: dict[str, Any]) -> None:
    """``current.json`` = the serving deployment plus every earlier one, newest first (kept forever)."""
    from llmops import storage

    s3 = _s3_client(s3_endpoint)
    key = f"deployments/{model}/current.json"
    try:
        previous = storage.read_json(s3, bucket, key)
    except FileNotFoundError:
        previous = None
    history = [] if previous is None else [{k: v for k, v in previous.items() if k != "history"},
                                           *previous.get("history", [])]
    storage.write_json(s3, bucket, key, {**record, "history": history})
    storage.write_json(s3, bucket, f"deployments/{model}/history/{record['at']}-{record['action']}.json", record)


def _s3_client(s3_endpoint: str | None) -> Any:
    """The S3-compatible endpoint's client when one is configured, else AWS S3's."""
    if s3_endpoint:
        from llmops.embedded import s3state

        return s3state.client(s3_endpoint)
    import boto3

    return boto3.client("s3")


def model_dir(model: str, weight_digest: str) -> str:
    """Where a staged version lives in the serving pod's model cache (content-addressed)."""
    return f"{MODEL_CACHE}/{model}/sha256-{weight_digest}"


def qualification_jobs(settings: Settings, hw: HardwareClass, *, model: str, targets: list[dict[str, str]],
                       evalset_config: str, s3_endpoint: str | None, tracking_uri: str,
                       latency_requests: int = 32) -> list[dict[str, Any]]:
    """One serving + eval pod job per target (``role``, ``version``, ``weights_uri``, ``weight_digest``).

    The serving pod's init container fetches the staged weights into the model cache and
    verifies their digest: vLLM never starts on weights that do not match the pin.
    """
    jobs = []
    for target in targets:
        dest = model_dir(model, target["weight_digest"])
        fetch = fetch_container(settings, target, model, s3_endpoint)
        job = podjobs.evaluation_pod_job(
            settings, hw, name=f"qualify-{target['role']}-{hw.name}", model_path=dest,
            served_model_name=f"{model}-v{target['version']}", evalset=evalset_config, experiment=EXPERIMENT,
            tags={"model": model, "model_version": target["version"], "role": target["role"],
                  "llmops.stage": "qualify"},
            latency_requests=latency_requests, mlflow_tracking_uri=tracking_uri,
        )
        jobs.append(replace(job, init_containers=(fetch,)).to_dict())
    return jobs


def fetch_container(settings: Settings, target: dict[str, str], model: str, s3_endpoint: str | None,
                    name: str = "fetch-weights") -> Container:
    """Init container: fetch a staged version into the model cache and re-verify its digest."""
    return Container(
        name=name, image=settings.jobs_image, command=("python", "-m", "llmops.jobs.fetch_weights"),
        # --full-verify: re-hash even a cached copy; the pin is checked on every start.
        args=("--weights-uri", target["weights_uri"], "--dest", model_dir(model, target["weight_digest"]),
              "--weight-digest", target["weight_digest"], "--full-verify"),
        env={"AWS_ENDPOINT_URL": s3_endpoint or ""}, secret_env=s3_secret_env(),
    )


def plan_canary(settings: Settings, *, model: str, stage_result: dict[str, Any], verdict: dict[str, Any],
                spec: dict[str, Any], stop_before_last_step: bool = False, from_step: int = 0,
                failures_so_far: int = 0, canary_extra_args: list[str] | None = None,
                name: str = "canary") -> list[dict[str, Any]]:
    """The canary pod job (stable = champion, canary = candidate), or [] when there is no champion.

    Runs on the default hardware class: traffic is split by a real proxy in front of two vLLM
    servers, and the controller rolls back to 0% on a breach.
    """
    from airflow.sdk import BaseHook

    from llmops.canary_pods import canary_pod_job

    if verdict.get("champion_version") is None:
        return []
    tracking_uri = BaseHook.get_connection("llmops_mlflow").host
    s3_endpoint = BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url")
    reg = registry.ModelRegistry(tracking_uri)
    champion = champion_target(reg, model)
    if champion is None:
        return []
    candidate = {"role": "candidate", "version": str(stage_result["model_version"]),
                 "weights_uri": stage_result["weights_uri"], "weight_digest": stage_result["weight_digest"]}
    hw = load_hardware_class(settings.default_hardware_class, settings.hardware_configs_dir)
    tags = {"model": model, "model_version": candidate["version"], "champion_version": champion["version"],
            "llmops.stage": "canary"}
    if settings.canary_router == "gateway":
        return [_gateway_canary_job(settings, hw, model=model, candidate=candidate, champion=champion, spec=spec,
                                    tags=tags, from_step=from_step, failures_so_far=failures_so_far,
                                    stop_before_last_step=stop_before_last_step, tracking_uri=tracking_uri,
                                    name=name, canary_extra_args=canary_extra_args)]
    job = canary_pod_job(
        settings, hw, stable_model_path=model_dir(model, champion["weight_digest"]),
        canary_model_path=model_dir(model, candidate["weight_digest"]), served_model_name=model, spec=spec,
        experiment=EXPERIMENT, model_stable=f"{model}@{champion['version']}",
        model_canary=f"{model}@{candidate['version']}",
        tags=tags, canary_extra_args=canary_extra_args or (), from_step=from_step, failures_so_far=failures_so_far,
        stop_before_last_step=stop_before_last_step, mlflow_tracking_uri=tracking_uri, name=name,
        exit_zero_on_rollback=True,  # a rollback is a verdict: check_canary fails the run without a retry
    )
    inits = (fetch_container(settings, champion, model, s3_endpoint, name="fetch-stable"),
             fetch_container(settings, candidate, model, s3_endpoint, name="fetch-canary"))
    return [replace(job, init_containers=inits).to_dict()]


def _gateway_canary_job(settings: Settings, hw: HardwareClass, *, model: str, candidate: dict[str, Any],
                        champion: dict[str, str], spec: dict[str, Any], tags: dict[str, str], from_step: int,
                        failures_so_far: int, stop_before_last_step: bool, tracking_uri: str, name: str,
                        canary_extra_args: list[str] | None) -> dict[str, Any]:
    """Gateway mode: roll ``<model>-canary`` to the candidate (route 0% to it first), then the
    controller-only job. A resumed run (after an approval) finds the canary already rolled."""
    from llmops.canary_pods import canary_controller_job
    from llmops.serving_route import ServingRoute, serve_candidate

    if canary_extra_args:
        raise ValueError("canary_vllm_args: in gateway mode the canary's flags are its Deployment's; "
                         "change them there (this parameter only applies to the embedded canary pod)")
    route = ServingRoute.for_model(settings, model)
    if from_step == 0:
        serve_candidate(settings, model, version=candidate["version"], weights_uri=candidate["weights_uri"],
                        weight_digest=candidate["weight_digest"])
    job = canary_controller_job(
        settings, hw, route_args=route.controller_args(), served_model_name=model, spec=spec, name=name,
        experiment=EXPERIMENT, model_stable=f"{model}@{champion['version']}",
        model_canary=f"{model}@{candidate['version']}", tags=tags, from_step=from_step,
        failures_so_far=failures_so_far, stop_before_last_step=stop_before_last_step, exit_zero_on_rollback=True,
        mlflow_tracking_uri=tracking_uri)
    return job.to_dict()


def canary_spec(settings: Settings, *, weights: list[int], window_s: int, failure_limit: int) -> dict[str, Any]:
    """The canary spec of a run (validated): its steps, and thresholds suited to the serving class.

    The TTFT ratio allowed between canary and stable follows the class's measured noise
    (``slo.max_regression``), never tighter than 1.2x.
    """
    from llmops.canary import CanarySpec

    hw = load_hardware_class(settings.default_hardware_class, settings.hardware_configs_dir)
    spec = CanarySpec.from_dict({
        "steps": [{"weight": int(w), "window_s": float(window_s)} for w in weights],
        "failure_limit": int(failure_limit),
        # No relative latency check on a noisy class: TTFT then only fails when 10x worse.
        "max_ttft_p95_ratio": max(1.2, 1.0 + hw.slo.max_regression) if hw.slo.max_regression is not None else 10.0,
        # Windows on the embedded default are short: ask for fewer requests per decision.
        "min_requests": 10 if window_s < 60 else 50,
    })
    return spec.to_dict()


def check_canary(model: str, candidate_version: str, result: dict[str, Any] | None,
                 tracking_uri: str) -> dict[str, Any] | None:
    """Fail the run (tagging the version ``rejected``) when the canary rolled back."""
    if result is None:
        return None
    if result.get("outcome") == "rolled_back":
        reasons = "; ".join(result.get("reasons", [])) or "canary analysis failed"
        registry.ModelRegistry(tracking_uri).tag(model, candidate_version, {
            registry.STATUS_TAG: "rejected", "llmops.canary_reasons": reasons[:4000],
            "llmops.breach_to_rollback_s": str(result.get("breach_to_rollback_s"))})
        raise GateFailed(f"canary of {model} version {candidate_version} rolled back to 0% "
                         f"(breach to rollback {result.get('breach_to_rollback_s')} s): {reasons}")
    return result


def champion_target(reg: registry.ModelRegistry, model: str) -> dict[str, str] | None:
    """The current champion as a qualification target, or None for a first model."""
    champion = reg.by_alias(model, registry.CHAMPION)
    if champion is None:
        return None
    return {"role": "champion", "version": champion.version, "weights_uri": champion.source,
            "weight_digest": champion.tags[registry.WEIGHT_DIGEST_TAG]}


def load_item_scores(run_id: str, revision: str, tokenizer_hash: str | None,
                     chat_template_hash: str | None) -> gates.ModelScores:
    """Per-item scores of an eval run, from its ``eval/eval_results.json`` artifact."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="eval/eval_results.json")
    rows = json.loads(Path(path).read_text())
    items = [gates.ItemScore(id=r["id"], category=r["category"], score=float(r["score"])) for r in rows]
    return gates.ModelScores(revision=revision, items=tuple(items), tokenizer_hash=tokenizer_hash,
                             chat_template_hash=chat_template_hash)


def decide(settings: Settings, *, model: str, candidate_version: str, evalset_config: str,
           results: list[dict[str, Any]], tracking_uri: str, max_drop: float | None = None) -> dict[str, Any]:
    """Run the qualify gate for every hardware class from the eval pods' results.

    Logs each verdict to MLflow (JSON + Markdown table, per-category deltas as metrics),
    tags the candidate version ``qualified`` or ``rejected`` with the reasons, and raises
    :class:`GateFailed` when any class fails.
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
            champ_latency = _latency(hw_name, champ) if hw.slo.max_regression is not None else None
        verdict = gates.qualify(cand_scores, champ_scores, categories, _latency(hw_name, cand), champ_latency,
                                hw.slo, gates.GateOptions(latency_tolerance=hw.slo.max_regression or 0.0))
        verdicts[hw_name] = verdict
        _log_verdict(model, candidate_version, champion.version if champion else None, hw_name, verdict)
    passed = all(v.passed for v in verdicts.values())
    reasons = [f"[{hw}] {reason}" for hw, v in verdicts.items() for reason in v.reasons if not v.passed]
    reg.tag(model, candidate_version, {registry.STATUS_TAG: "qualified" if passed else "rejected",
                                       "llmops.gate_reasons": "; ".join(reasons)[:4000] or "passed"})
    summary = {"passed": passed, "model": model, "candidate_version": candidate_version,
               "champion_version": champion.version if champion else None,
               "verdicts": {hw: v.to_dict() for hw, v in verdicts.items()}}
    if not passed:
        raise GateFailed(f"model {model} version {candidate_version} failed qualification:\n" + "\n".join(reasons))
    return summary


def _latency(hw_name: str, result: dict[str, Any]) -> gates.LatencyMeasurement:
    latency = result.get("latency") or {}
    if "ttft_p99_ms" not in latency or "tpot_p99_ms" not in latency:
        raise GateFailed(f"[{hw_name}] eval run {result.get('mlflow_run_id')} measured no latency "
                         f"(ttft_p99_ms/tpot_p99_ms): cannot judge the latency gate")
    return gates.LatencyMeasurement(hardware_class=hw_name, ttft_p99_ms=latency["ttft_p99_ms"],
                                    tpot_p99_ms=latency["tpot_p99_ms"])


def _log_verdict(model: str, candidate_version: str, champion_version: str | None, hw_name: str,
                 verdict: gates.GateVerdict) -> None:
    import mlflow

    from llmops import tracking

    experiment_id = tracking.configure(None, EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"gate {model} v{candidate_version} {hw_name}"):
        mlflow.set_tags({"llmops.stage": "gate", "model": model, "model_version": candidate_version,
                         "champion_version": champion_version or "none", "hardware_class": hw_name,
                         "passed": str(verdict.passed).lower()})
        mlflow.log_metrics({f"delta/{row.category}": row.delta for row in verdict.categories
                            if row.delta is not None})
        mlflow.log_dict(verdict.to_dict(), "gate/verdict.json")
        mlflow.log_text(verdict.to_markdown(), "gate/verdict.md")
