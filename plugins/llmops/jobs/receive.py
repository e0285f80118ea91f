"""Pod job: receive a weight drop: validate its manifest and verify every file by streaming it.

    python -m llmops.jobs.receive --drop-uri s3://llmops-drops/tiny-chat/r1/ --experiment llmops-refresh \\
        [--models-bucket llmops-models] [--airflow-run-id <run id> --airflow-try <try number>]

Every file is read once from S3 (in parallel) and checked for size and SHA-256; nothing is
written to disk. On any problem (invalid manifest, missing, truncated, corrupted or unlisted
file) the drop is copied to ``quarantine/<model>/<revision>/`` with a ``reason.json`` (nothing
is deleted), an MLflow run records the rejection, and the job exits 2 naming each bad file.

On a pass, receive writes its **receipt** ``receipts/<model>/<revision>/receipt.json`` in the
models bucket (:func:`llmops.refresh.staging.write_receipt`): the ETag of the manifest it parsed,
the weight digest, and the key, size and ETag of every object it hashed. Stage stages nothing
without a receipt that matches the drop as it is then. A retry rewrites the same receipt.

Result (``return.json``):

- ok: ``{status: "ok", model, revision, model_family, weight_digest, runtime_image, drop_uri,
  manifest_uri, manifest_etag, receipt_uri, files: [{path, size, sha256}], etags: {path: etag},
  bytes_verified, throughput_mb_s, mlflow_run_id}``
- rejected: ``{status: "rejected", model, revision, drop_uri, weight_digest (null for an invalid
  manifest), problems: [str], quarantine_uri, reason_uri, mlflow_run_id}``

A transient S3 error fails the job (exit 1) without quarantining: a retry must not reject a
good drop.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from llmops.config import settings as settings_mod
from llmops.core.fields import INPUT_ERRORS
from llmops.core.manifests import MANIFEST_NAME, ManifestError
from llmops.core.podjob import VERDICT_EXIT_CODE
from llmops.core.runtimes import Runtime, RuntimeNotAllowed, load_runtimes, verdict_key
from llmops.io import tracking
from llmops.io.integrity import DEFAULT_WORKERS, verify_drop
from llmops.io.s3 import client_from_env, parse_s3_uri, read_json_if_exists, s3_uri
from llmops.jobs.common import optional_env, setup_logging, write_result
from llmops.refresh.staging import (
    DEFAULT_MODELS_BUCKET,
    DropReceipt,
    ObjectState,
    quarantine_drop,
    read_drop_manifest_versioned,
    split_drop_prefix,
    write_receipt,
)

log = setup_logging("llmops.jobs.receive")

EXIT_REJECTED = VERDICT_EXIT_CODE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drop-uri", required=True, help="s3://<drops bucket>/<model>/<revision>/")
    parser.add_argument("--experiment", default="llmops-refresh", help="MLflow experiment of the receive runs")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="files verified in parallel")
    parser.add_argument("--models-bucket", default=optional_env("LLMOPS_MODELS_BUCKET") or DEFAULT_MODELS_BUCKET,
                        help=f"bucket of the receipts, stage's models bucket (default $LLMOPS_MODELS_BUCKET or "
                             f"{DEFAULT_MODELS_BUCKET})")
    parser.add_argument("--runtimes-file", default=str(settings_mod.runtimes_file()),
                        help="the serving-runtime allowlist (default $LLMOPS_RUNTIMES_FILE or include/runtimes.yaml)")
    parser.add_argument("--airflow-run-id", default=None, help="the Airflow run (a tag of the MLflow run)")
    parser.add_argument("--airflow-try", default=None, help="the task's try number (a tag of the MLflow run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Receive the drop; exit 0 when it is intact, 2 when it is rejected (and quarantined)."""
    args = parse_args(argv)
    try:
        bucket, prefix = parse_s3_uri(args.drop_uri)
        prefix = prefix.rstrip("/") + "/"
        model, revision = split_drop_prefix(prefix)
    except ValueError as exc:
        log.error("--drop-uri: %s", exc)
        return EXIT_REJECTED
    s3 = client_from_env()
    drop_uri = s3_uri(bucket, prefix)
    manifest_uri = s3_uri(bucket, prefix + MANIFEST_NAME)
    try:
        manifest, manifest_etag = read_drop_manifest_versioned(s3, bucket, prefix)
    except FileNotFoundError as exc:
        # No arrival marker: an incomplete drop or a wrong URI. Nothing to judge, nothing to quarantine.
        log.error("%s; the drop is incomplete (manifest.json is written last) or --drop-uri is wrong", exc)
        write_result({"status": "rejected", "model": model, "revision": revision, "drop_uri": drop_uri,
                      "weight_digest": None, "problems": [str(exc)], "quarantine_uri": None, "reason_uri": None,
                      "mlflow_run_id": None})
        return EXIT_REJECTED
    except ManifestError as exc:
        return _reject(args, s3, bucket, prefix, model, revision, None, exc.to_dict(),
                       [f"{f}: {p}; fix: {x}" for f, p, x in exc.problems])
    except ValueError as exc:  # not JSON at all
        return _reject(args, s3, bucket, prefix, model, revision, None,
                       {"manifest": manifest_uri, "problems": [{"field": "$", "problem": str(exc),
                                                                "fix": "rewrite manifest.json as UTF-8 JSON"}]},
                       [str(exc)])

    try:
        runtime = allowed_runtime(s3, args.models_bucket, manifest.runtime_image, args.runtimes_file)
    except RuntimeNotAllowed as exc:
        return _reject(args, s3, bucket, prefix, model, revision, manifest.weight_digest,
                       {"manifest": manifest_uri, "problems": [{"field": "runtime_image", "problem": str(exc),
                                                                "fix": "see the problem"}]}, [str(exc)])
    log.info("verifying %s: %d files, %d bytes, weight digest %s", drop_uri, len(manifest.files),
             manifest.total_size, manifest.weight_digest)
    verification = verify_drop(s3, bucket, prefix, manifest.files, workers=args.workers)
    if not verification.ok:
        return _reject(args, s3, bucket, prefix, model, revision, manifest.weight_digest, verification.to_dict(),
                       verification.problems())

    log.info("%s (%.1f MB/s)", verification.message(), verification.throughput_mb_s)
    result: dict[str, Any] = {
        "status": "ok", "model": manifest.model, "revision": manifest.revision,
        "model_family": manifest.model_family, "weight_digest": manifest.weight_digest,
        "runtime_image": manifest.runtime_image, "runtime": runtime.to_dict(),
        "drop_uri": drop_uri, "manifest_uri": manifest_uri,
        "manifest_etag": manifest_etag,
        "files": [f.to_dict() for f in manifest.files], "etags": verification.etags,
        "bytes_verified": verification.bytes_read, "throughput_mb_s": round(verification.throughput_mb_s, 2),
    }
    result["mlflow_run_id"] = _record(
        args.experiment, tags={"llmops.stage": "receive", "status": "ok", "model": model, "revision": revision,
                               "weight_digest": manifest.weight_digest, **_airflow_tags(args)},
        params={"drop_uri": drop_uri, "files": len(manifest.files), "runtime_image": manifest.runtime_image,
                "model_family": manifest.model_family},
        metrics={"receive/bytes_verified": float(verification.bytes_read),
                 "receive/seconds": verification.seconds,
                 "receive/throughput_mb_s": verification.throughput_mb_s},
        artifact=("receive/manifest.json", manifest.to_dict()),
    )
    # Last: the receipt is receive's word that exactly these objects were verified.
    result["receipt_uri"] = write_receipt(s3, args.models_bucket, DropReceipt(
        drop_uri=drop_uri, model=manifest.model, revision=manifest.revision, weight_digest=manifest.weight_digest,
        manifest_etag=manifest_etag,
        objects={f.path: ObjectState.of(f.actual_size or 0, f.etag or "") for f in verification.files},
        received_at=datetime.now(UTC).isoformat(timespec="seconds"), mlflow_run_id=result["mlflow_run_id"],
        airflow_run_id=args.airflow_run_id, airflow_try=args.airflow_try,
    ))
    log.info("receipt %s: stage may stage exactly these %d objects", result["receipt_uri"], len(manifest.files))
    write_result(result)
    return 0


def allowed_runtime(s3: Any, models_bucket: str, image: str, runtimes_file: str) -> Runtime:
    """The allowlist entry of ``image``; :class:`RuntimeNotAllowed` when it is not listed or its
    re-qualification rejected it. A malformed allowlist is the operator's to fix: raised as it is
    (exit 1, nothing quarantined), since the drop is not what is wrong."""
    try:
        allowlist = load_runtimes(runtimes_file)
    except INPUT_ERRORS as exc:
        raise SystemExit(f"the runtime allowlist cannot be read: {exc}") from None
    runtime = allowlist.require(image)
    verdict = read_json_if_exists(s3, models_bucket, verdict_key(runtime))
    if isinstance(verdict, dict) and verdict.get("status") == "rejected":
        allowlist.require(image, rejected=verdict)
    return runtime


def _reject(args: argparse.Namespace, s3: Any, bucket: str, prefix: str, model: str, revision: str,
            digest: str | None, reason: dict[str, Any], problems: list[str]) -> int:
    """Quarantine the drop, record the rejection in MLflow, write the result; return the exit code."""
    drop_uri = s3_uri(bucket, prefix)
    reason = {"stage": "receive", "model": model, "revision": revision, "weight_digest": digest, **reason}
    quarantine = quarantine_drop(s3, bucket, prefix, reason)
    run_id = _record(
        args.experiment,
        tags={"llmops.stage": "receive", "status": "rejected", "model": model, "revision": revision,
              **({"weight_digest": digest} if digest else {}), **_airflow_tags(args)},
        params={"drop_uri": drop_uri, "quarantine_uri": quarantine.quarantine_uri},
        metrics={"receive/problems": float(len(problems))},
        artifact=("receive/reason.json", {**reason, "quarantine": quarantine.quarantine_uri}),
    )
    write_result({"status": "rejected", "model": model, "revision": revision, "drop_uri": drop_uri,
                  "weight_digest": digest, "problems": problems, "quarantine_uri": quarantine.quarantine_uri,
                  "reason_uri": quarantine.reason_uri, "mlflow_run_id": run_id})
    log.error("rejected %s: %d problem(s):\n%s\nthe drop was copied to %s (reason: %s); nothing was deleted. "
              "fix: publish the corrected drop again under a new revision once the files are right (this run "
              "releases its claim: the same weights are then refreshed again)",
              drop_uri, len(problems), "\n".join(f"  - {p}" for p in problems), quarantine.quarantine_uri,
              quarantine.reason_uri)
    return EXIT_REJECTED


def _airflow_tags(args: argparse.Namespace) -> dict[str, str]:
    """Tags naming the Airflow run and try of this receive (a retried attempt is identifiable)."""
    if not args.airflow_run_id:
        return {}
    return {"llmops.airflow_run_id": args.airflow_run_id, "llmops.airflow_try": str(args.airflow_try or "")}


def _record(experiment: str, *, tags: dict[str, str], params: dict[str, Any], metrics: dict[str, float],
            artifact: tuple[str, Any]) -> str | None:
    """One MLflow run in ``experiment``; ``None`` (and a warning) without ``MLFLOW_TRACKING_URI``."""
    tracking_uri = optional_env("MLFLOW_TRACKING_URI")
    if tracking_uri is None:
        log.warning("MLFLOW_TRACKING_URI is not set: the receive run is not recorded in MLflow")
        return None
    import mlflow

    experiment_id = tracking.configure(tracking_uri, experiment)
    run_name = f"receive {tags['model']}/{tags['revision']}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags(tags)
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        name, payload = artifact
        mlflow.log_dict(json.loads(json.dumps(payload, default=str)), name)
        return run.info.run_id


if __name__ == "__main__":
    raise SystemExit(main())
