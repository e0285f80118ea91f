"""Pod job: stage a received drop, pin it in a deployment manifest and register an MLflow model version.

    python -m llmops.jobs.stage --drop-uri s3://llmops-drops/tiny-chat/r1/ --registered-model tiny-chat \\
        --hardware-classes cpu,h100x1 --experiment llmops-refresh [--runtime-version v0.32.0]

Steps, each idempotent (a retried task or a re-delivered drop creates nothing twice):

1. copy the drop server-side to ``s3://<models bucket>/models/<model>/sha256-<weight digest>/``;
2. hash the staged tokenizer files and chat template;
3. build the deployment manifest (weight digest, runtime image and version, hardware-class
   config hashes, tokenizer and chat-template hashes);
4. register the model version (tags = every pin), unless these weights already are one;
5. write the manifest beside the weights as ``deployment.json``;
6. point alias ``challenger`` at the version unless it is ``champion``;
7. record an MLflow run (params = pins, the manifest as an artifact).

Result (``return.json``): ``{status: "ok", model, revision, drop_uri, registered_model,
model_version, created, aliases, weights_uri, weight_digest, runtime_image, runtime_version,
hardware_configs, tokenizer_hash, chat_template_hash, deployment_manifest, deployment_manifest_uri,
pins_differ, staging: {already_staged, copied, skipped, bytes_copied, seconds}, mlflow_run_id}``.
``pins_differ`` lists pins of an already registered version that differ from this drop's
(``{pin: {"registered": ..., "drop": ...}}``); the registered ones stay in force.

Exit 2 when an argument, the manifest or a hardware class is wrong (nothing is staged then),
1 on a failed copy (retry: finished copies are kept).
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
from llmops.io import tracking
from llmops.io.registry import CHALLENGER, CHAMPION, PIN_PREFIX, ModelRegistry, RegisteredVersion
from llmops.io.s3 import StorageError, client_from_env, parse_s3_uri, read_json, s3_uri, write_json
from llmops.jobs.common import optional_env, setup_logging, write_result
from llmops.refresh.staging import read_drop_manifest, split_drop_prefix, stage_drop

log = setup_logging("llmops.jobs.stage")

EXIT_INVALID = 2
DEFAULT_MODELS_BUCKET = "llmops-models"
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
                        help="JSON {path: etag} from receive's result: S3 refuses to copy an object changed since")
    return parser.parse_args(argv)


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
    """Stage and register the drop; exit 0 with a result, 2 on a wrong input, 1 on a failed copy."""
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
            split_drop_prefix(prefix)
            etags = json.loads(args.source_etags) if args.source_etags else None
        except ValueError as exc:
            raise StageInputError(f"--drop-uri / --source-etags: {exc}") from exc
        try:
            manifest = read_drop_manifest(s3, drops_bucket, prefix)
        except (FileNotFoundError, ValueError) as exc:  # ManifestError is a ValueError
            raise StageInputError(f"{exc}; fix: run receive on the drop first") from exc
        check_tokenizer_listed(manifest)
        configs = hardware_configs(args.hardware_classes)
        version_name = runtime_version(args.runtime_version, manifest.runtime_image)
    except StageInputError as exc:
        log.error("cannot stage %s: %s", args.drop_uri, exc)
        return EXIT_INVALID

    import mlflow

    registered_model = args.registered_model or manifest.model
    experiment_id = tracking.configure(tracking_uri, args.experiment)
    with mlflow.start_run(experiment_id=experiment_id,
                          run_name=f"stage {manifest.model}/{manifest.revision}") as run:
        mlflow.set_tags({"llmops.stage": "stage", "model": manifest.model, "revision": manifest.revision,
                         "weight_digest": manifest.weight_digest, "registered_model": registered_model})
        try:
            result = _stage(args, s3, drops_bucket, manifest, registered_model, configs, version_name, etags,
                            run.info.run_id)
        except (StorageError, StageInputError, ManifestError) as exc:
            mlflow.set_tag("status", "failed")
            mlflow.end_run(status="FAILED")
            log.error("staging %s failed: %s", args.drop_uri, exc)
            return 1 if isinstance(exc, StorageError) else EXIT_INVALID
    write_result(result)
    return 0


def _stage(args: argparse.Namespace, s3: Any, drops_bucket: str, manifest: WeightDropManifest,
           registered_model: str, configs: dict[str, str], version_name: str, etags: dict[str, str] | None,
           run_id: str) -> dict[str, Any]:
    import mlflow

    staging = stage_drop(s3, manifest, drops_bucket, args.models_bucket, source_etags=etags)
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
    mlflow.log_params(deployment.pins())
    mlflow.log_metrics({"stage/bytes_copied": float(staging.bytes_copied), "stage/seconds": staging.seconds,
                        "stage/files_copied": float(len(staging.copied))})
    mlflow.log_dict(deployment.to_dict(), f"stage/{DEPLOYMENT_NAME}")
    return {
        "status": "ok", "model": manifest.model, "revision": manifest.revision, "drop_uri": drop_uri,
        "registered_model": registered_model, "model_version": version.version, "created": created,
        "aliases": aliases, "weights_uri": staging.uri, "weight_digest": manifest.weight_digest,
        "runtime_image": deployment.runtime_image, "runtime_version": deployment.runtime_version,
        "hardware_configs": deployment.hardware_configs, "tokenizer_hash": deployment.tokenizer_hash,
        "chat_template_hash": deployment.chat_template_hash, "deployment_manifest": deployment.to_dict(),
        "deployment_manifest_uri": manifest_uri, "pins_differ": differ,
        "staging": {"already_staged": staging.already_staged, "copied": list(staging.copied),
                    "skipped": list(staging.skipped), "bytes_copied": staging.bytes_copied,
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
