"""Pod job: list a corpus source prefix once and plan the parse shards.

    python -m llmops.jobs.corpus_plan --source-uri s3://llmops-corpus/sources/main/ \
        --bucket llmops-corpus --corpus main --run-id <airflow run id>

Writes ``corpus/<corpus>/runs/<run>/sources.jsonl`` and ``plan.json``; result:
``{source_uri, documents, shards, sources_uri, run_prefix}``.
"""

from __future__ import annotations

import argparse

from llmops.corpus import ingest, shards
from llmops.io.s3 import client_from_env
from llmops.jobs.common import setup_logging, write_result

log = setup_logging("llmops.jobs.corpus_plan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-uri", required=True, help="s3://<bucket>/<prefix>/ holding the source documents")
    parser.add_argument("--bucket", required=True, help="the corpus bucket")
    parser.add_argument("--corpus", required=True, help="corpus name")
    parser.add_argument("--run-id", required=True, help="the pipeline run id (names the run's folder)")
    parser.add_argument("--docs-per-shard", type=int, default=shards.DEFAULT_DOCS_PER_SHARD)
    parser.add_argument("--max-shards", type=int, default=shards.DEFAULT_MAX_SHARDS)
    parser.add_argument("--scratch", default=None, help="scratch folder (unused: planning streams)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Plan the run. An empty source prefix is a result (``documents: 0``), not a crash: the DAG
    fails the run on it without retrying, which an exit code would not."""
    args = parse_args(argv)
    result = ingest.plan_sources(client_from_env(), args.source_uri, args.bucket, args.corpus, args.run_id,
                                 docs_per_shard=args.docs_per_shard, max_shards=args.max_shards)
    write_result(result)
    if result["documents"] == 0:
        log.error("no source documents under %s; fix: check --source-uri (the UI param source_prefix)",
                  args.source_uri)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
