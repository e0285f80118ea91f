"""The ``runtime_requalify`` DAG's I/O: which runtimes are new, the paired eval pod jobs, the verdict,
and moving a champion's pin to a runtime it qualified on. Runs inside Airflow tasks (light I/O only).

A runtime (an entry of ``include/runtimes.yaml``, see :mod:`llmops.core.runtimes`) is **new** when
its :attr:`~llmops.core.runtimes.Runtime.identity` is not in the models bucket's
``runtimes/seen.json`` (:data:`SEEN_KEY`). The first detection only records the allowlist as the
baseline (like the benchmark change watcher). A runtime becomes seen once it has a verdict
(``qualified`` or ``rejected``, at :func:`~llmops.core.runtimes.verdict_key`) or nothing to
re-qualify on it; a run that failed before its verdict leaves it new, so the next detection tries again.

For each new runtime and each model whose champion is not pinned to it, two eval pod jobs run
on the default hardware class, the same eval set and limit: the champion's weights on the
runtime they are pinned to (role ``pinned``) and on the new runtime (role ``new_runtime``).
:func:`judge` pairs them (:func:`llmops.refresh.runtime_upgrade.judge_runtime_upgrade`), logs
the comparison to MLflow and writes the runtime's verdict; :func:`move_pin` moves a qualified
champion's pin (``deployment.json`` with its history, registry pins, serving objects).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops.config.settings import Settings
from llmops.core.hardware import HardwareClass, load_hardware_class
from llmops.core.runtimes import Runtime, RuntimeAllowlist, load_runtimes, verdict_key
from llmops.io import registry
from llmops.refresh.runtime_upgrade import ItemAnswer, RuntimeVerdict, judge_runtime_upgrade

EXPERIMENT = "llmops-runtime-requalify"
SEEN_KEY = "runtimes/seen.json"
STAGE_TAG = "runtime_requalify"
PINNED, NEW_RUNTIME = "pinned", "new_runtime"
RUNTIME_IDENTITY_TAG = "llmops.runtime_identity"
"""Registry tag of a version whose pin moved here: the identity (image, vLLM, CUDA, driver) it qualified on."""
_ARCHIVE_RE = re.compile(r"deployment\.(\d+)\.json$")


class RuntimeRejected(RuntimeError):
    """The new runtime changed the champion's answers; the message names the categories."""


class NothingToQualify(LookupError):
    """A manual run names a runtime or model that cannot be re-qualified; the message says why and the fix."""


# -- detection ---------------------------------------------------------------------------------


def allowlist(settings: Settings) -> RuntimeAllowlist:
    """The runtime allowlist the platform runs with (``settings.runtimes_file``)."""
    return load_runtimes(settings.runtimes_file)


def detect(settings: Settings, s3: Any, bucket: str, *, runtime_image: str = "") -> dict[str, Any]:
    """The runtimes to re-qualify: the one named (``runtime_image``, a manual run; it must be
    listed), else those whose identity is not in :data:`SEEN_KEY`. The first detection writes
    the baseline (every listed identity) and returns none."""
    from llmops.io import s3 as s3io

    listed = allowlist(settings)
    if runtime_image:
        return {"baseline": False, "manual": True, "runtimes": [listed.require(runtime_image).to_dict()],
                "judged": []}
    seen = s3io.read_json_if_exists(s3, bucket, SEEN_KEY)
    if seen is None:
        at = _now()
        s3io.write_json(s3, bucket, SEEN_KEY, {"schema_version": 1, "source": listed.source, "runtimes": {
            r.identity: {"image": r.image, "outcome": "baseline", "at": at} for r in listed.runtimes}})
        return {"baseline": True, "manual": False, "runtimes": [], "judged": []}
    known = (seen or {}).get("runtimes") if isinstance(seen, dict) else None
    if not isinstance(known, dict):
        raise ValueError(f"s3://{bucket}/{SEEN_KEY}: 'runtimes' is not an object; fix: delete the object (the next "
                         f"detection records the allowlist as the baseline) or restore it")
    new = [r for r in listed.runtimes if r.identity not in known]
    # A runtime judged already (a manual run) is only to be marked seen: no second pair of evals.
    judged = [r for r in new if isinstance(s3io.read_json_if_exists(s3, bucket, verdict_key(r)), dict)]
    return {"baseline": False, "manual": False, "runtimes": [r.to_dict() for r in new if r not in judged],
            "judged": [r.to_dict() for r in judged]}


def runtime_from_dict(data: dict[str, Any]) -> Runtime:
    """A runtime back from its :meth:`~llmops.core.runtimes.Runtime.to_dict` (XCom)."""
    return Runtime(image=data["image"], vllm_version=data["vllm_version"], accelerator=data["accelerator"],
                   cuda=data.get("cuda"), driver=data.get("driver"), notes=data.get("notes") or "")


def serves_on(runtime: Runtime, hw: HardwareClass) -> bool:
    """Whether ``runtime`` can serve on ``hw`` at all: a CPU runtime on a class without GPUs, a GPU one on GPUs."""
    return (runtime.accelerator == "cpu") == (hw.gpu.count == 0)


def models_with_champion(reg: registry.ModelRegistry) -> list[str]:
    """Every registered model that has a ``champion`` alias, sorted."""
    names = []
    for model in reg.client.search_registered_models(max_results=1000):
        aliases = getattr(model, "aliases", None) or {}
        if registry.CHAMPION in aliases:
            names.append(model.name)
    return sorted(names)


def pairs_to_run(settings: Settings, reg: registry.ModelRegistry, runtimes: list[dict[str, Any]], *,
                 model: str = "") -> dict[str, Any]:
    """``{"pairs": [...], "skipped": [...]}``: each (runtime, model) whose champion must be
    re-qualified on the runtime, and each runtime or model left out with the reason.

    A champion already pinned to the runtime's image needs nothing; a runtime that cannot serve
    on the default hardware class (a GPU runtime on a CPU class) is skipped with the reason.
    """
    from llmops.serving.weights import version_target

    hw = load_hardware_class(settings.default_hardware_class, settings.hardware_configs_dir)
    if not runtimes:
        return {"pairs": [], "skipped": [], "hardware_class": hw.name}
    models = [model] if model else models_with_champion(reg)
    pairs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for data in runtimes:
        runtime = runtime_from_dict(data)
        if not serves_on(runtime, hw):
            skipped.append({"runtime": runtime.image, "identity": runtime.identity, "model": None,
                            "why": f"a {runtime.accelerator} runtime cannot serve on the default hardware class "
                                   f"{hw.name!r} (gpu count {hw.gpu.count})"})
            continue
        for name in models:
            champion = reg.by_alias(name, registry.CHAMPION)
            if champion is None:
                if model:
                    raise NothingToQualify(f"model {name!r} has no champion: nothing to re-qualify; fix: name a "
                                           f"model with a champion, or leave `model` empty for every such model")
                continue
            target = version_target("champion", champion)
            if target["runtime_image"] == runtime.image:
                # The same image under a new identity is a CUDA/driver bump: a property of the nodes,
                # which one run on one hardware class cannot pair (both sides would land on the same
                # nodes). Named in the seen state, never passed as qualified.
                skipped.append({"runtime": runtime.image, "identity": runtime.identity, "model": name,
                                "why": f"champion v{champion.version} is already pinned to this image; a CUDA or "
                                       f"driver change under it is not paired here (both evals would run on "
                                       f"the same nodes): re-qualify on nodes with the new driver by hand"})
                continue
            pairs.append({"runtime": runtime.to_dict(), "model": name, "champion_version": champion.version,
                          "target": target})
    return {"pairs": pairs, "skipped": skipped, "hardware_class": hw.name}


# -- the paired eval pod jobs ------------------------------------------------------------------


def requalification_jobs(settings: Settings, pairs: list[dict[str, Any]], *, evalset_config: str,
                         limit_per_category: int, s3_endpoint: str | None, tracking_uri: str,
                         known: RuntimeAllowlist | None = None) -> list[dict[str, Any]]:
    """Serving + eval pod jobs on the default hardware class: each champion's weights once on their
    pinned runtime (shared by every new runtime it is compared with) and once per new runtime.

    Each serving pod's init container fetches the weights and verifies their digest; each eval
    run is tagged with its runtime's identity (:meth:`~llmops.core.runtimes.Runtime.tags`: what
    differed) and with what pairs it (``requalify_model``, ``role``, ``requalify_identity``)."""
    hw = load_hardware_class(settings.default_hardware_class, settings.hardware_configs_dir)
    known = known or allowlist(settings)
    jobs = []
    pinned_done: set[str] = set()
    for index, pair in enumerate(pairs):
        runtime = runtime_from_dict(pair["runtime"])
        pinned = pair["target"]
        if pair["model"] not in pinned_done:
            pinned_done.add(pair["model"])
            listed = known.find(pinned["runtime_image"])
            jobs.append(_eval_job(settings, hw, pair, role=PINNED, image=pinned["runtime_image"],
                                  version=pinned.get("runtime_version", ""), name=f"requalify-{index}-pinned",
                                  runtime_tags=listed.tags() if listed else {"runtime_identity": "unlisted"},
                                  identity="pinned", evalset_config=evalset_config,
                                  limit_per_category=limit_per_category, s3_endpoint=s3_endpoint,
                                  tracking_uri=tracking_uri))
        jobs.append(_eval_job(settings, hw, pair, role=NEW_RUNTIME, image=runtime.image, version=runtime.vllm_version,
                              name=f"requalify-{index}-new-{runtime.identity[:8]}", runtime_tags=runtime.tags(),
                              identity=runtime.identity, evalset_config=evalset_config,
                              limit_per_category=limit_per_category, s3_endpoint=s3_endpoint,
                              tracking_uri=tracking_uri))
    return jobs


def _eval_job(settings: Settings, hw: HardwareClass, pair: dict[str, Any], *, role: str, image: str, version: str,
              name: str, runtime_tags: dict[str, str], identity: str, evalset_config: str, limit_per_category: int,
              s3_endpoint: str | None, tracking_uri: str) -> dict[str, Any]:
    from llmops.evals.eval_job import evaluation_pod_job
    from llmops.serving.weights import fetch_container, model_dir

    pinned = pair["target"]
    tags = {**runtime_tags, "model": pair["model"], "model_version": pair["champion_version"], "role": role,
            "llmops.stage": STAGE_TAG, "requalify_model": pair["model"], "requalify_identity": identity}
    job = evaluation_pod_job(
        settings, hw, name=name, model_path=model_dir(pair["model"], pinned["weight_digest"]),
        served_model_name=f"{pair['model']}-v{pair['champion_version']}", evalset=evalset_config,
        experiment=EXPERIMENT, vllm_image=image, runtime_version=version,
        limit_per_category=str(limit_per_category), tags=tags, mlflow_tracking_uri=tracking_uri)
    fetch = fetch_container(settings, pinned, pair["model"], s3_endpoint)
    return replace(job, init_containers=(fetch,)).to_dict()


# -- the verdict --------------------------------------------------------------------------------


def load_answers(run_id: str) -> list[ItemAnswer]:
    """Per-item answers and scores of an eval run, from its ``eval/eval_results.json`` artifact."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="eval/eval_results.json")
    rows = json.loads(Path(path).read_text())
    where = f"MLflow run {run_id} eval/eval_results.json"
    return [ItemAnswer.from_row(row, where) for row in rows]


def judge(settings: Settings, *, pairs: list[dict[str, Any]], results: list[dict[str, Any]], tracking_uri: str,
          models_bucket: str, s3: Any, max_answer_change: float, max_score_delta: float,
          airflow_run_id: str) -> dict[str, Any]:
    """Pair each pair's two eval runs, judge them, log the comparison to MLflow and write each
    runtime's verdict at :func:`~llmops.core.runtimes.verdict_key` (``rejected`` when any model's
    answers changed on it, else ``qualified``). Returns ``{"qualified": [...], "rejected": [...]}``
    (one entry per pair); raising is the caller's (:func:`raise_if_rejected`), after the pins of the
    qualified pairs moved."""
    from llmops.io import s3 as s3io
    from llmops.io import tracking

    tracking.configure(tracking_uri, EXPERIMENT)
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        tags = result.get("tags") or {}
        by_key[str(tags.get("requalify_model")), str(tags.get("requalify_identity"))] = result
    outcomes: dict[str, list[dict[str, Any]]] = {}
    runtimes: dict[str, Runtime] = {}
    for pair in pairs:
        runtime = runtime_from_dict(pair["runtime"])
        runtimes[runtime.identity] = runtime
        runs = {role: by_key[pair["model"], key] for role, key in ((PINNED, "pinned"), (NEW_RUNTIME, runtime.identity))
                if (pair["model"], key) in by_key}
        missing = [role for role in (PINNED, NEW_RUNTIME) if role not in runs]
        if missing:
            raise RuntimeError(f"runtime {runtime.image} x model {pair['model']}: no {' and no '.join(missing)} eval "
                               f"result among the requalify pods' results; fix: rerun the run (its evaluate tasks)")
        verdict = judge_runtime_upgrade(load_answers(runs[PINNED]["mlflow_run_id"]),
                                        load_answers(runs[NEW_RUNTIME]["mlflow_run_id"]),
                                        max_answer_change=max_answer_change, max_score_delta=max_score_delta)
        run_id = _log_verdict(pair, runtime, verdict, runs, airflow_run_id)
        outcomes.setdefault(runtime.identity, []).append({
            "model": pair["model"], "champion_version": pair["champion_version"], "passed": verdict.passed,
            "changed_categories": verdict.changed_categories, "per_category": verdict.per_category(),
            "mlflow_run_id": run_id, "reasons": list(verdict.reasons),
            "pinned_runtime_image": pair["target"]["runtime_image"],
            "eval_runs": {role: runs[role]["mlflow_run_id"] for role in (PINNED, NEW_RUNTIME)}})
    summary: dict[str, list[dict[str, Any]]] = {"qualified": [], "rejected": []}
    for identity, per_model in outcomes.items():
        runtime = runtimes[identity]
        document = verdict_document(runtime, per_model, max_answer_change=max_answer_change,
                                    max_score_delta=max_score_delta, airflow_run_id=airflow_run_id)
        s3io.write_json(s3, models_bucket, verdict_key(runtime), document)
        for one in per_model:
            entry = {**one, "runtime": runtime.to_dict(), "verdict_uri": s3io.s3_uri(models_bucket,
                                                                                      verdict_key(runtime))}
            summary["qualified" if document["status"] == "qualified" else "rejected"].append(entry)
    return summary


def verdict_document(runtime: Runtime, per_model: list[dict[str, Any]], *, max_answer_change: float,
                     max_score_delta: float, airflow_run_id: str) -> dict[str, Any]:
    """The runtime's verdict file: ``rejected`` when any model's answers changed, naming the first
    such model at the top level (``changed_categories``, ``per_category``, ``mlflow_run_id``: what
    receive reads), every model under ``models``."""
    failed = [one for one in per_model if not one["passed"]]
    head = (failed or per_model)[0]
    return {"status": "rejected" if failed else "qualified", "runtime": runtime.to_dict(),
            "changed_categories": sorted({c for one in failed for c in one["changed_categories"]}),
            "per_category": head["per_category"], "model": head["model"],
            "champion_version": head["champion_version"], "mlflow_run_id": head["mlflow_run_id"],
            "max_answer_change": max_answer_change, "max_score_delta": max_score_delta,
            "models": {one["model"]: {k: v for k, v in one.items() if k != "model"} for one in per_model},
            "airflow_run_id": airflow_run_id, "at": _now()}


def raise_if_rejected(summary: dict[str, Any]) -> None:
    """:class:`RuntimeRejected` naming each rejected runtime, model and changed category."""
    rejected = summary.get("rejected") or []
    if rejected:
        lines = [f"runtime {one['runtime']['image']} changed the answers of {one['model']} champion "
                 f"v{one['champion_version']} (same weights as on {one['pinned_runtime_image']}) in categories "
                 f"{', '.join(one['changed_categories']) or 'none (another model changed)'}; verdict "
                 f"{one['verdict_uri']}, MLflow run {one['mlflow_run_id']}" for one in rejected]
        raise RuntimeRejected("runtime rejected: receive refuses drops pinned to it from now on; fix: keep serving "
                              "on the pinned runtime, or fix the runtime and list a new digest\n" + "\n".join(lines))


def _log_verdict(pair: dict[str, Any], runtime: Runtime, verdict: RuntimeVerdict, runs: dict[str, dict[str, Any]],
                 airflow_run_id: str) -> str:
    """One MLflow run per (Airflow run, runtime, model) with the comparison; a retry finds it and logs none."""
    import mlflow

    from llmops.io import tracking

    experiment_id = tracking.configure(None, EXPERIMENT)
    identity = {"llmops.stage": f"{STAGE_TAG}_verdict", "model": pair["model"],
                "model_version": pair["champion_version"], "runtime_identity": runtime.identity,
                "airflow_run_id": airflow_run_id}
    done = tracking.finished_run(experiment_id, identity)
    if done is not None:
        return done
    name = f"runtime {runtime.identity[:8]} {pair['model']} v{pair['champion_version']}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        mlflow.set_tags({**runtime.tags(), **identity, "passed": str(verdict.passed).lower(),
                         "changed_categories": ",".join(verdict.changed_categories) or "none",
                         "pinned_runtime_image": pair["target"]["runtime_image"],
                         "pinned_eval_run": runs[PINNED]["mlflow_run_id"],
                         "new_runtime_eval_run": runs[NEW_RUNTIME]["mlflow_run_id"]})
        metrics = {}
        for row in verdict.categories:
            metrics[f"changed_share/{row.category}"] = row.changed_share
            metrics[f"score_delta/{row.category}"] = row.score_delta
        mlflow.log_metrics(metrics)
        mlflow.log_dict(verdict.to_dict(), "runtime_requalify/verdict.json")
        mlflow.log_text(verdict.to_markdown(), "runtime_requalify/verdict.md")
        return run.info.run_id


# -- a qualified champion's pin moves -----------------------------------------------------------


class ModelBusy(RuntimeError):
    """A live run holds the model's refresh lease: the pin moves on a later try."""


def move_pin_under_lease(settings: Settings, *, qualified: dict[str, Any], tracking_uri: str, models_bucket: str,
                         run_id: str) -> dict[str, Any]:
    """:func:`move_pin` while holding the model's refresh lease (the one ``model_refresh`` takes),
    so a refresh never promotes over a pin half moved, nor a pin move re-serves over a canary.
    Raises :class:`ModelBusy` (retried by the task) while another live run holds it."""
    from llmops.refresh.actions import claim_model, release_model

    model = qualified["model"]
    held, why = claim_model(model, run_id)
    if not held:
        raise ModelBusy(f"{why}; the champion's pin moves to {qualified['runtime']['image']} on a later try "
                        "(a refresh in progress may change the champion: the move re-checks it)")
    try:
        return move_pin(settings, qualified=qualified, tracking_uri=tracking_uri, models_bucket=models_bucket,
                        run_id=run_id)
    finally:
        release_model(model, run_id)


def move_pin(settings: Settings, *, qualified: dict[str, Any], tracking_uri: str, models_bucket: str,
             run_id: str) -> dict[str, Any]:
    """Pin the qualified champion to the new runtime: the old ``deployment.json`` kept as
    ``deployment.<n>.json``, a new one with the runtime and the default class's current config
    hash (the only class it was re-qualified on: other classes' pins are dropped, in the manifest
    and the registry), the registry pins, the serving objects re-applied,
    ``deployments/<model>/current.json`` recording the move. A retry converges: a manifest already
    pinning the runtime is not archived again."""
    from llmops.io import s3 as s3io
    from llmops.refresh.actions import SERVING_DOCUMENT_TAG, SERVING_SHA256_TAG
    from llmops.serving.deployments import serve_champion
    from llmops.serving.objects import deployment_manifest_uri, read_deployment_manifest, write_serving_document
    from llmops.serving.weights import HARDWARE_CONFIG_PIN, RUNTIME_IMAGE_PIN, RUNTIME_VERSION_PIN

    model, version = qualified["model"], qualified["champion_version"]
    runtime = runtime_from_dict(qualified["runtime"])
    reg = registry.ModelRegistry(tracking_uri)
    champion = reg.by_alias(model, registry.CHAMPION)
    if champion is None or champion.version != version:
        return {"model": model, "version": version, "moved": False,
                "why": f"champion is now v{champion.version if champion else 'none'}: the qualified version no "
                       f"longer serves; its next refresh pins what it is qualified on"}
    s3 = s3io.client_from_connection()
    hw = load_hardware_class(settings.default_hardware_class, settings.hardware_configs_dir)
    manifest = read_deployment_manifest(s3, champion.source)
    archived = None
    if (manifest.runtime_image, manifest.runtime_version) != (runtime.image, runtime.vllm_version):
        archived = _archive_manifest(s3, champion.source)
        # Qualified on the new runtime on this class only: the other classes' pins do not carry over
        # (a version serves only on a runtime and class config it was qualified on together).
        manifest = replace(manifest, runtime_image=runtime.image, runtime_version=runtime.vllm_version,
                           hardware_configs={hw.name: hw.config_hash})
        bucket, key = s3io.parse_s3_uri(deployment_manifest_uri(champion.source))
        s3io.write_json(s3, bucket, key, manifest.to_dict())
    for stale in sorted(k for k in champion.tags if k.startswith(HARDWARE_CONFIG_PIN)
                        and k != f"{HARDWARE_CONFIG_PIN}{hw.name}"):
        reg.client.delete_model_version_tag(model, version, stale)
    reg.tag(model, version, {RUNTIME_IMAGE_PIN: runtime.image,
                             f"{registry.PIN_PREFIX}runtime_image_digest": runtime.digest,
                             RUNTIME_VERSION_PIN: runtime.vllm_version,
                             f"{HARDWARE_CONFIG_PIN}{hw.name}": hw.config_hash,
                             RUNTIME_IDENTITY_TAG: runtime.identity, "llmops.runtime_requalified_by": run_id})
    served = serve_champion(settings, model, manifest=manifest, hw=hw,
                            reason=f"runtime upgrade to {runtime.image}")
    document_uri = write_serving_document(s3, champion.source, served.pop("document"))
    reg.tag(model, version, {SERVING_DOCUMENT_TAG: document_uri, SERVING_SHA256_TAG: served["sha256"]})
    _record_current(s3, models_bucket, reg, model, version, run_id)
    return {"model": model, "version": version, "moved": True, "runtime": runtime.to_dict(),
            "previous_runtime_image": qualified["pinned_runtime_image"], "archived_manifest": archived,
            "deployment_manifest": deployment_manifest_uri(champion.source), "hardware_class": hw.name,
            "serving": {**served, "document_uri": document_uri}}


def _archive_manifest(s3: Any, weights_uri: str) -> str:
    """Copy ``deployment.json`` (its exact bytes) to the next free ``deployment.<n>.json``; its URI."""
    from llmops.io import s3 as s3io
    from llmops.serving.objects import deployment_manifest_uri

    bucket, key = s3io.parse_s3_uri(deployment_manifest_uri(weights_uri))
    prefix = key.rsplit("/", 1)[0] + "/"
    taken = [int(m.group(1)) for obj in s3io.list_prefix(s3, bucket, prefix + "deployment.")
             if (m := _ARCHIVE_RE.search(obj.key))]
    target = f"{prefix}deployment.{max(taken, default=0) + 1}.json"
    s3.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key})
    return s3io.s3_uri(bucket, target)


def _record_current(s3: Any, bucket: str, reg: registry.ModelRegistry, model: str, version: str,
                    run_id: str) -> None:
    """``deployments/<model>/current.json`` records the pin move (action ``runtime_upgrade``) with its history."""
    from llmops.io import s3 as s3io
    from llmops.refresh.deploy_history import history_key, next_current

    champion = reg.get(model, version)
    pins = {k.removeprefix(registry.PIN_PREFIX): v for k, v in champion.tags.items()
            if k.startswith(registry.PIN_PREFIX)}
    record = {"model": model, "version": version, "weights_uri": champion.source, "pins": pins,
              "action": "runtime_upgrade", "airflow_run_id": run_id, "at": _now()}
    key = f"deployments/{model}/current.json"
    current = next_current(s3io.read_json_if_exists(s3, bucket, key), record)
    s3io.write_json(s3, bucket, key, current)
    s3io.write_json(s3, bucket, history_key(model, current), {k: v for k, v in current.items() if k != "history"})


def benchmark_trigger(moved: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``benchmark_targets_changed`` asset event's ``extra`` naming the runtime change (None: no pin moved)."""
    done = [one for one in moved if one.get("moved")]
    if not done:
        return None
    return {"classes": sorted({one["hardware_class"] for one in done}),
            "changes": [f"{one['hardware_class']}: runtime image changed {one['previous_runtime_image'][:48]} -> "
                        f"{one['runtime']['image'][:48]} (runtime_requalify moved {one['model']} "
                        f"v{one['version']})" for one in done],
            "runtime_requalified": [{"model": one["model"], "version": one["version"],
                                     "runtime": one["runtime"]["image"], "identity": one["runtime"]["identity"],
                                     "previous_runtime_image": one["previous_runtime_image"]} for one in done]}


# -- what has been seen -------------------------------------------------------------------------


def record_seen(s3: Any, bucket: str, *, runtimes: list[dict[str, Any]], skipped: list[dict[str, Any]],
                pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mark as seen each detected runtime that now has a verdict, or had nothing to re-qualify;
    one that still lacks a verdict (its run failed before judging) stays new for the next detection."""
    from llmops.io import s3 as s3io

    state = s3io.read_json_if_exists(s3, bucket, SEEN_KEY)
    if not isinstance(state, dict) or not isinstance(state.get("runtimes"), dict):
        state = {"schema_version": 1, "runtimes": {}}
    planned = {pair["runtime"]["identity"] for pair in pairs}
    marked = {}
    for data in runtimes:
        runtime = runtime_from_dict(data)
        verdict = s3io.read_json_if_exists(s3, bucket, verdict_key(runtime))
        if isinstance(verdict, dict) and verdict.get("status") in ("qualified", "rejected"):
            outcome = verdict["status"]
        elif runtime.identity not in planned:
            reasons = [s["why"] for s in skipped if s["identity"] == runtime.identity]
            outcome = "nothing_to_requalify" + (f": {'; '.join(reasons)}" if reasons else ": no model has a champion")
        else:
            continue
        marked[runtime.identity] = state["runtimes"][runtime.identity] = {"image": runtime.image,
                                                                          "outcome": outcome, "at": _now()}
    if marked:
        s3io.write_json(s3, bucket, SEEN_KEY, state)
    return marked


def _now() -> str:
    return datetime.now(UTC).isoformat()
