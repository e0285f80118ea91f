"""Pod job: parse one shard of a corpus run into typed chunks (streamed Parquet).

    python -m llmops.jobs.corpus_parse --bucket llmops-corpus --corpus main --run-id <run> \
        --shard 0 --parser-version v1

Reads the run's ``sources.jsonl``, parses the shard's documents with the pinned parsers of
``include/corpus/parsers/<version>.yaml``, writes ``shards/shard-NNNNN.parquet`` and a shard
report (chunked documents, rejected documents with reasons, counts per content type). A
document that cannot be read is rejected with its reason, never dropped; a transient S3 error
fails the job (the retry parses the shard again, overwriting its output).
"""

from __future__ import annotations

import argparse

from llmops.corpus import ingest
from llmops.corpus.config import load_parser_config
from llmops.io.s3 import client_from_env
from llmops.jobs.common import setup_logging, write_result

log = setup_logging("llmops.jobs.corpus_parse")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--parser-version", required=True, help="v1, v2, ... or a path to a parser YAML")
    parser.add_argument("--scratch", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse the shard; exit 0 (rejections are data, reported to validation)."""
    args = parse_args(argv)
    config = load_parser_config(args.parser_version)
    result = ingest.parse_shard(client_from_env(), args.bucket, args.corpus, args.run_id, args.shard, config,
                                ingest.scratch_dir(args.scratch))
    log.info("shard %d: %d documents, %d chunked, %d rejected, %d chunks %s", args.shard, result["documents"],
             result["chunked"], result["rejected"], result["rows"], result["counts"])
    write_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
