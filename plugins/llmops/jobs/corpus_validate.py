"""Pod job: schema checks of a corpus run with Great Expectations, recorded in MLflow.

    python -m llmops.jobs.corpus_validate --bucket llmops-corpus --corpus main --run-id <run> \
        --parser-version v1 --experiment llmops-corpus

Streams the run's chunks through the expectation suite (content types within the taxonomy,
required fields non-null, chunk lengths within bounds), tallies content types, checks document
parity and compares with the live snapshot (vanished / fallen types). Logs the verdict, the GX
results, the Data Docs HTML and the counts per content type to MLflow. A failing run is
quarantined (failing rows + report under ``corpus/<corpus>/quarantine/<run>/``) and the result
says ``rejected`` with the message naming the new or missing types: the DAG fails on it, with
no retry (a verdict is not a transient error). Nothing is published here.

Result: ``{status: passed|rejected, snapshot_id, message, new_types, type_changes, counts,
parity, quarantine_uri, mlflow_run_id}``.
"""

from __future__ import annotations

import argparse
import json

from llmops.corpus import ingest
from llmops.corpus.config import load_parser_config, load_taxonomy
from llmops.io import tracking
from llmops.io.s3 import client_from_env
from llmops.jobs.common import optional_env, setup_logging, write_result

log = setup_logging("llmops.jobs.corpus_validate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--parser-version", required=True)
    parser.add_argument("--source-uri", default="")
    parser.add_argument("--experiment", default="llmops-corpus")
    parser.add_argument("--allow-type-drop", default="false", choices=["true", "false"],
                        help="accept declared types that vanished or fell against the live snapshot")
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--scratch", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Validate; exit 0 with status passed or rejected (the DAG turns rejected into a failed run)."""
    args = parse_args(argv)
    taxonomy = load_taxonomy()
    config = load_parser_config(args.parser_version)
    scratch = ingest.scratch_dir(args.scratch)
    outcome = ingest.validate_run(client_from_env(), args.bucket, args.corpus, args.run_id, taxonomy=taxonomy,
                                  config=config, allow_type_drop=args.allow_type_drop == "true", scratch=scratch,
                                  batch_rows=args.batch_rows)
    verdict = outcome.verdict
    run_id = _log_to_mlflow(args, outcome, taxonomy.version)
    (log.info if verdict.passed else log.error)("%s", verdict.message)
    write_result({"status": "passed" if verdict.passed else "rejected", "snapshot_id": outcome.snapshot_id,
                  "message": verdict.message, "new_types": verdict.new_types,
                  "type_changes": [c.describe() for c in verdict.type_changes], "counts": verdict.counts,
                  "parity": outcome.report["verdict"]["parity"], "quarantine_uri": outcome.quarantine_uri,
                  "rejected_documents": outcome.report["rejected_documents"], "mlflow_run_id": run_id})
    return 0


def _log_to_mlflow(args: argparse.Namespace, outcome: ingest.ValidationOutcome, taxonomy_version: int) -> str | None:
    import mlflow

    tracking_uri = optional_env("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        log.warning("MLFLOW_TRACKING_URI is not set: the validation is not recorded in MLflow")
        return None
    experiment_id = tracking.configure(tracking_uri, args.experiment)
    verdict = outcome.verdict
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"validate-{args.corpus}") as run:
        mlflow.set_tags({"llmops.stage": "corpus_validate", "airflow_run_id": args.run_id, "corpus": args.corpus,
                         "snapshot_id": outcome.snapshot_id, "verdict": "passed" if verdict.passed else "rejected",
                         "new_types": ",".join(verdict.new_types) or "-",
                         "missing_types": ",".join(c.content_type for c in verdict.type_changes) or "-"})
        mlflow.log_params({"parser_version": args.parser_version, "taxonomy_version": taxonomy_version,
                           "source_uri": args.source_uri, "allow_type_drop": args.allow_type_drop})
        metrics = {f"chunks/{t}": float(n) for t, n in verdict.counts.items() if t.replace("_", "").isalnum()}
        metrics |= {"chunks/total": float(sum(verdict.counts.values())), "documents": float(verdict.parity.documents),
                    "documents/chunked": float(verdict.parity.chunked),
                    "documents/rejected": float(verdict.parity.rejected), "passed": float(verdict.passed)}
        mlflow.log_metrics(metrics)
        mlflow.log_dict(outcome.report, "validation/report.json")
        mlflow.log_dict(outcome.report["verdict"]["failed_expectations"] and
                        {"failed": outcome.report["verdict"]["failed_expectations"]} or {"failed": []},
                        "validation/failed_expectations.json")
        mlflow.log_text(json.dumps(verdict.counts, indent=2), "validation/counts_per_content_type.json")
        if outcome.docs_dir and outcome.docs_dir.exists():
            mlflow.log_artifacts(str(outcome.docs_dir), "data_docs")
        return run.info.run_id


if __name__ == "__main__":
    raise SystemExit(main())
