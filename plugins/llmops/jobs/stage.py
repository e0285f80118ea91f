"""Pod job: stage a received drop, pin it in a deployment manifest and register an MLflow model version.

    python -m llmops.jobs.stage --drop-uri s3://llmops-drops/tiny-chat/r1/ --registered-model tiny-chat \\
        --hardware-classes cpu,h100x1 --experiment llmops-refresh [--runtime-version v0.32.0] \\
        [--airflow-run-id <run id> --airflow-try <try number>]

Before anything is written, stage refuses (exit 2) a drop it must not stage:

- ``--registered-model`` differs from the drop's model (its manifest's ``model`` and the
  ``<model>/`` segment of ``--drop-uri``): a drop of one model is never registered as another;
- receive never passed the drop (no receipt ``receipts/<model>/<revision>/receipt.json`` in the
  models bucket), or the drop changed since (another manifest, an object added, removed or
  rewritten: see :func:`llmops.refresh.staging.check_received`), or ``--source-etags`` (this
  run's receive result) are not the receipt's.

Steps, each idempotent (a retried task or a re-delivered drop creates nothing twice):

1. copy the drop server-side to ``s3://<models bucket>/models/<model>/sha256-<weight digest>/``,
   each copy conditional on the ETag receive verified; an existing staged copy is checked
   object by object against its marker and repaired from the drop if it changed since;
2. hash the staged tokenizer files and chat template;
3. build the deployment manifest (weight digest, runtime image and version, hardware-class
   config hashes, tokenizer and chat-template hashes);
4. register the model version (tags = every pin), unless these weights already are one;
5. write the manifest beside the weights as ``deployment.json``;
6. point alias ``challenger`` at the version unless it is ``champion``;
7. record an MLflow run (params = pins, the manifest as an artifact). With ``--airflow-run-id``
   the run is tagged ``llmops.airflow_run_id`` / ``llmops.airflow_try`` and a retry of the
   same Airflow run resumes that MLflow run instead of starting a second one.

Result (``return.json``): ``{status: "ok", model, revision, drop_uri, registered_model,
model_version, created, aliases, weights_uri, weight_digest, runtime_image, runtime_version,
hardware_configs, tokenizer_hash, chat_template_hash, deployment_manifest, deployment_manifest_uri,
pins_differ, receipt_uri, staging: {already_staged, copied, skipped, repaired, hashed,
bytes_copied, seconds}, mlflow_run_id}``.
``pins_differ`` lists pins of an already registered version that differ from this drop's
(``{pin: {"registered": ..., "drop": ...}}``); the registered ones stay in force.

Exit 2 (:data:`llmops.core.podjob.VERDICT_EXIT_CODE`, not retried) when an argument, the manifest,
the receipt or a hardware class is wrong, or the drop changed since receive (nothing is staged
then); 1 on a failed copy (retry: finished copies are kept and checked).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmops.config.images import image_repository
from llmops.config.settings import DEFAULT_VLLM_IMAGE, SettingsError
from llmops.config.settings import load as load_settings
from llmops.core.deployment import TOKENIZER_FILES, DeploymentManifest, chat_template_hash, tokenizer_hash
from llmops.core.hardware import HardwareConfigError, load_hardware_class
from llmops.core.manifests import ManifestError, WeightDropManifest
from llmops.core.podjob import VERDICT_EXIT_CODE
from llmops.io import tracking
from llmops.io.registry import CHALLENGER, CHAMPION, PIN_PREFIX, ModelRegistry, RegisteredVersion
from llmops.io.s3 import StorageError, client_from_env, parse_s3_uri, read_json, s3_uri, write_json
from llmops.jobs.common import optional_env, setup_logging, write_result
from llmops.refresh.staging import (
    DEFAULT_MODELS_BUCKET,
    DropReceipt,
    StagingRefused,
    check_received,
    receipt_key,
    split_drop_prefix,
    stage_drop,
)

log = setup_logging("llmops.jobs.stage")

EXIT_INVALID = VERDICT_EXIT_CODE
DEPLOYMENT_NAME = "deployment.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


class StageInputError(ValueError):
    """An argument, the drop or a hardware class cannot be staged; the message names the fix."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drop-uri", required=True, help="s3://<drops bucket>/<model>/<revision>/ (received)")
    parser.add_argument("--registered-model", default=None, help="MLflow registered model (default: the drop's model)")
    parser.add_argument("--hardware-classes", default="cpu",
                        help="comma-separated hardware classes the version is pinned for (e.g. cpu,h100x1)")
    parser.add_argument("--experiment", default="llmops-refresh", help="MLflow experiment of the stage runs")
    parser.add_argument("--runtime-version", default=None,
                        help="serving runtime version (default $LLMOPS_VLLM_VERSION, else the image's tag)")
    parser.add_argument("--models-bucket", default=optional_env("LLMOPS_MODELS_BUCKET") or DEFAULT_MODELS_BUCKET,
                        help=f"bucket of staged models (default $LLMOPS_MODELS_BUCKET or {DEFAULT_MODELS_BUCKET})")
    parser.add_argument("--source-etags", default=None,
                        help="JSON {path: etag} from this run's receive result: they must be the receipt's")
    parser.add_argument("--airflow-run-id", default=None,
                        help="the Airflow run: tags the MLflow run, and a retry resumes that MLflow run")
    parser.add_argument("--airflow-try", default=None, help="the task's try number (a tag of the MLflow run)")
    return parser.parse_args(argv)


def registered_model_problem(registered_model: str, manifest_model: str, path_model: str,
                             drop_uri: str) -> str | None:
    """Why ``registered_model`` must not receive this drop (``None`` when it may). Pure.

    A drop registers only under its own model: the manifest's ``model`` and the ``<model>/``
    segment of its URI (which must agree as well).
    """
    if registered_model == manifest_model == path_model:
        return None
    if manifest_model != path_model:
        return (f"{drop_uri}manifest.json names model {manifest_model!r} but the drop lies under "
                f"{path_model!r}/; fix: publish the drop under {manifest_model}/<revision>/")
    return (f"--registered-model {registered_model!r} is not the drop's model {manifest_model!r} "
            f"(manifest.json model and the drop path {drop_uri}): a drop of {manifest_model} cannot be "
            f"registered as {registered_model}; fix: pass --registered-model {manifest_model} (the run's "
            f"params.model), or publish the {registered_model} weights under s3://<drops>/{registered_model}/"
            f"<revision>/")


def runtime_version(explicit: str | None, image: str) -> str:
    """The serving runtime version: ``explicit``, ``$LLMOPS_VLLM_VERSION``, the image's tag, or the
    tag of the project's default vLLM image when ``image`` is that repository."""
    for candidate in (explicit, optional_env("LLMOPS_VLLM_VERSION"), _tag(image)):
        if candidate:
            return candidate
    if image_repository(image) == image_repository(DEFAULT_VLLM_IMAGE) and _tag(DEFAULT_VLLM_IMAGE):
        return str(_tag(DEFAULT_VLLM_IMAGE))
    raise StageInputError(f"the runtime version of {image} is unknown; fix: pass --runtime-version "
                          f"(e.g. v0.32.0) or set LLMOPS_VLLM_VERSION")


def hardware_configs(classes: str) -> dict[str, str]:
    """``{class: config hash}`` of each comma-separated hardware class; raise naming the fix."""
    names = list(dict.fromkeys(n.strip() for n in classes.split(",") if n.strip()))
    if not names:
        raise StageInputError("--hardware-classes is empty; fix: name at least one class, e.g. cpu")
    try:
        configs_dir = load_settings().hardware_configs_dir
        return {name: load_hardware_class(name, configs_dir).config_hash for name in names}
    except (HardwareConfigError, SettingsError) as exc:
        raise StageInputError(str(exc)) from exc


@dataclass(frozen=True)
class TokenizerPins:
    """The tokenizer and chat-template hashes of a staged model."""

    tokenizer_hash: str
    chat_template_hash: str


def tokenizer_pins(s3: Any, bucket: str, prefix: str, manifest: WeightDropManifest) -> TokenizerPins:
    """Hash the tokenizer files and chat template read from the staged copy at ``s3://bucket/prefix``."""
    listed = {f.path for f in manifest.files}
    files: dict[str, bytes] = {}
    for name in (*TOKENIZER_FILES, CHAT_TEMPLATE_FILE):
        if name in listed:
            files[name] = s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
    where = s3_uri(bucket, prefix)
    try:
        tokenizer = tokenizer_hash(files)  # parses each file; its errors name the file and the fix
        config = json.loads(files["tokenizer_config.json"])
    except ValueError as exc:
        raise StageInputError(f"{where}: {exc}") from exc
    try:
        template = files[CHAT_TEMPLATE_FILE].decode() if CHAT_TEMPLATE_FILE in files else None
    except UnicodeDecodeError as exc:
        raise StageInputError(f"{where}{CHAT_TEMPLATE_FILE}: not UTF-8 ({exc}); "
                              f"fix: save the template as UTF-8") from exc
    try:
        return TokenizerPins(tokenizer_hash=tokenizer, chat_template_hash=chat_template_hash(config, template))
    except ValueError as exc:
        raise StageInputError(f"{where}tokenizer_config.json: {exc}") from exc


def check_tokenizer_listed(manifest: WeightDropManifest) -> None:
    """Raise unless the drop lists the tokenizer files its pins are computed from."""
    listed = {f.path for f in manifest.files}
    missing = [name for name in TOKENIZER_FILES[:2] if name not in listed]
    if missing:
        raise StageInputError(f"{manifest.uri}: the drop has no {', '.join(missing)}; fix: publish the checkpoint "
                              f"with its tokenizer files (a slow-only tokenizer must be converted to tokenizer.json)")


def main(argv: list[str] | None = None) -> int:
    """Stage and register the drop; exit 0 with a result, 2 on a wrong input or drop, 1 on a failed copy."""
    args = parse_args(argv)
    tracking_uri = optional_env("MLFLOW_TRACKING_URI")
    s3 = client_from_env()
    try:
        if tracking_uri is None:
            raise StageInputError("MLFLOW_TRACKING_URI is not set; fix: point it at the MLflow tracking server "
                                  "(the model version is registered there)")
        try:
            drops_bucket, prefix = parse_s3_uri(args.drop_uri)
            prefix = prefix.rstrip("/") + "/"
            path_model, _ = split_drop_prefix(prefix)
            etags = source_etags(args.source_etags)
        except ValueError as exc:
            raise StageInputError(f"--drop-uri / --source-etags: {exc}") from exc
        drop_uri = s3_uri(drops_bucket, prefix)
        registered_model = args.registered_model or path_model
        problem = registered_model_problem(registered_model, path_model, path_model, drop_uri)
        if problem:
            raise StageInputError(problem)
        try:
            manifest, receipt = check_received(s3, drops_bucket, prefix, args.models_bucket, etags)
        except StagingRefused as exc:
            raise StageInputError(str(exc)) from exc
        except (FileNotFoundError, ValueError) as exc:  # ManifestError is a ValueError
            raise StageInputError(f"{exc}; fix: publish the drop again, run receive on it, then stage it") from exc
        problem = registered_model_problem(registered_model, manifest.model, path_model, drop_uri)
        if problem:
            raise StageInputError(problem)
        check_tokenizer_listed(manifest)
        configs = hardware_configs(args.hardware_classes)
        version_name = runtime_version(args.runtime_version, manifest.runtime_image)
    except StageInputError as exc:
        log.error("cannot stage %s: %s", args.drop_uri, exc)
        return EXIT_INVALID

    experiment_id = tracking.configure(tracking_uri, args.experiment)
    tags = {"llmops.stage": "stage", "model": manifest.model, "revision": manifest.revision,
            "weight_digest": manifest.weight_digest, "registered_model": registered_model}
    with _start_run(experiment_id, f"stage {manifest.model}/{manifest.revision}", tags, args) as run:
        import mlflow

        try:
            result = _stage(args, s3, drops_bucket, manifest, receipt, registered_model, configs, version_name,
                            run.info.run_id)
        except (StorageError, StageInputError, ManifestError) as exc:
            mlflow.set_tag("status", "failed")
            mlflow.end_run(status="FAILED")
            log.error("staging %s failed: %s", args.drop_uri, exc)
            return 1 if isinstance(exc, StorageError) and not isinstance(exc, StagingRefused) else EXIT_INVALID
    write_result(result)
    return 0


def source_etags(text: str | None) -> dict[str, str] | None:
    """``--source-etags`` parsed: a JSON object ``{path: etag}``, or ``None`` when not given."""
    if not text:
        return None
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("--source-etags must be a JSON object {path: etag}; fix: pass receive's result 'etags'")
    return value


def _start_run(experiment_id: str, run_name: str, tags: dict[str, str], args: argparse.Namespace) -> Any:
    """The MLflow run of this stage attempt, tagged with the Airflow run and try.

    A retry of the same Airflow run (same ``--airflow-run-id``, model and revision) resumes
    the run an earlier try started (killed or failed) instead of starting a second one.
    """
    import mlflow

    tries: list[str] = []
    existing = _airflow_run(experiment_id, tags, args.airflow_run_id) if args.airflow_run_id else None
    if existing is not None:
        log.info("resuming MLflow run %s of Airflow run %s", existing.info.run_id, args.airflow_run_id)
        tries = [t for t in existing.data.tags.get("llmops.airflow_tries", "").split(",") if t]
        active = mlflow.start_run(run_id=existing.info.run_id)
    else:
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
    airflow = {}
    if args.airflow_run_id:
        try_number = str(args.airflow_try or "")
        tries = [*tries, try_number] if try_number and try_number not in tries else tries
        airflow = {"llmops.airflow_run_id": args.airflow_run_id, "llmops.airflow_try": try_number,
                   "llmops.airflow_tries": ",".join(tries)}
    mlflow.set_tags({**tags, **airflow})
    return active


def _airflow_run(experiment_id: str, tags: dict[str, str], airflow_run_id: str) -> Any:
    """The stage run an earlier try of ``airflow_run_id`` started for this drop, if any."""
    from mlflow import MlflowClient

    values = [airflow_run_id, tags["model"], tags["revision"]]
    if any("'" in v or "\\" in v for v in values):  # not expressible in a filter string: start a new run
        return None
    found = MlflowClient().search_runs(
        [experiment_id], max_results=1, order_by=["attributes.start_time ASC"],
        filter_string=(f"tags.`llmops.stage` = 'stage' and tags.`llmops.airflow_run_id` = '{airflow_run_id}' "
                       f"and tags.model = '{tags['model']}' and tags.revision = '{tags['revision']}'"))
    return found[0] if found else None


def _log_params(params: dict[str, str]) -> None:
    """Log ``params`` on the active run; a resumed run keeps those an earlier try logged (MLflow params are
    immutable), with a warning where they differ."""
    import mlflow

    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    differ = {k: (logged[k], v) for k, v in params.items() if k in logged and logged[k] != str(v)}
    if differ:
        log.warning("an earlier try of this run logged other values (kept): %s", differ)
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})


def _stage(args: argparse.Namespace, s3: Any, drops_bucket: str, manifest: WeightDropManifest,
           receipt: DropReceipt, registered_model: str, configs: dict[str, str], version_name: str,
           run_id: str) -> dict[str, Any]:
    import mlflow

    staging = stage_drop(s3, manifest, drops_bucket, args.models_bucket, source_etags=receipt.etags)
    _, staged_prefix = parse_s3_uri(staging.uri)
    pins = tokenizer_pins(s3, args.models_bucket, staged_prefix, manifest)
    drop_uri = s3_uri(drops_bucket, f"{manifest.model}/{manifest.revision}/")
    deployment = DeploymentManifest(
        model_name=registered_model, weight_digest=manifest.weight_digest, weights_uri=staging.uri,
        runtime_image=manifest.runtime_image, runtime_version=version_name, hardware_configs=configs,
        tokenizer_hash=pins.tokenizer_hash, chat_template_hash=pins.chat_template_hash,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), source_drop=drop_uri,
    )
    registry = ModelRegistry(optional_env("MLFLOW_TRACKING_URI"))
    version, created = registry.register(
        registered_model, source=staging.uri, pins=deployment.pins(), run_id=run_id,
        description=f"weights {manifest.weight_digest} from {drop_uri}",
        extra_tags={"llmops.source_drop": drop_uri, "llmops.revision": manifest.revision,
                    "llmops.model_family": manifest.model_family,
                    "llmops.deployment_manifest": staging.uri + DEPLOYMENT_NAME})
    differ = _pins_differ(version, deployment.pins()) if not created else {}
    if differ:
        log.warning("version %s of %s already holds these weights with other pins (kept): %s",
                    version.version, registered_model, differ)
    deployment, manifest_uri = _write_deployment(s3, args.models_bucket, staged_prefix, deployment, version)
    if CHAMPION in version.aliases:
        log.info("version %s is the champion already: alias %s not moved", version.version, CHALLENGER)
    else:
        registry.set_alias(registered_model, CHALLENGER, version.version)
    aliases = sorted(registry.get(registered_model, version.version).aliases)
    log.info("%s version %s of %s (aliases %s), weights %s", "registered" if created else "found",
             version.version, registered_model, aliases, staging.uri)

    mlflow.set_tags({"status": "ok", "model_version": version.version, "created": str(created).lower()})
    _log_params(deployment.pins())
    mlflow.log_metrics({"stage/bytes_copied": float(staging.bytes_copied), "stage/seconds": staging.seconds,
                        "stage/files_copied": float(len(staging.copied)),
                        "stage/files_repaired": float(len(staging.repaired))})
    mlflow.log_dict(deployment.to_dict(), f"stage/{DEPLOYMENT_NAME}")
    return {
        "status": "ok", "model": manifest.model, "revision": manifest.revision, "drop_uri": drop_uri,
        "registered_model": registered_model, "model_version": version.version, "created": created,
        "aliases": aliases, "weights_uri": staging.uri, "weight_digest": manifest.weight_digest,
        "runtime_image": deployment.runtime_image, "runtime_version": deployment.runtime_version,
        "hardware_configs": deployment.hardware_configs, "tokenizer_hash": deployment.tokenizer_hash,
        "chat_template_hash": deployment.chat_template_hash, "deployment_manifest": deployment.to_dict(),
        "deployment_manifest_uri": manifest_uri, "pins_differ": differ,
        "receipt_uri": s3_uri(args.models_bucket, receipt_key(manifest.model, manifest.revision)),
        "staging": {"already_staged": staging.already_staged, "copied": list(staging.copied),
                    "skipped": list(staging.skipped), "repaired": dict(staging.repaired),
                    "hashed": list(staging.hashed), "bytes_copied": staging.bytes_copied,
                    "seconds": round(staging.seconds, 3)},
        "mlflow_run_id": run_id,
    }


def _write_deployment(s3: Any, bucket: str, prefix: str, deployment: DeploymentManifest,
                      version: RegisteredVersion) -> tuple[DeploymentManifest, str]:
    """Write ``deployment.json`` for ``version`` beside the weights, keeping one already written for it."""
    key = prefix + DEPLOYMENT_NAME
    uri = s3_uri(bucket, key)
    try:
        existing = DeploymentManifest.from_dict(read_json(s3, bucket, key), uri)
    except (FileNotFoundError, ValueError):  # absent, not JSON, or invalid: (re)write it
        existing = None
    if (existing is not None and existing.model_name == deployment.model_name
            and existing.model_version == version.version and existing.weight_digest == deployment.weight_digest):
        log.info("%s already pins version %s; kept", uri, version.version)
        return existing, uri
    current = deployment.with_version(version.version)
    write_json(s3, bucket, key, current.to_dict())
    return current, uri


def _pins_differ(version: RegisteredVersion, pins: dict[str, str]) -> dict[str, dict[str, str | None]]:
    registered = {k[len(PIN_PREFIX):]: v for k, v in version.tags.items() if k.startswith(PIN_PREFIX)}
    return {name: {"registered": registered.get(name), "drop": value}
            for name, value in sorted(pins.items()) if registered.get(name) != value}


def _tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


if __name__ == "__main__":
    raise SystemExit(main())
