"""Pod job: publish a validated corpus run: snapshot, embeddings, vector index, pointer swap.

    python -m llmops.jobs.corpus_publish --bucket llmops-corpus --corpus main --run-id <run> \
        --vector-store local

Refuses a run whose validation did not pass. Copies the parts to
``corpus/<corpus>/snapshots/sha256-<id>/``, embeds every chunk with the offline embedding model,
indexes the vectors (embedded index uploaded beside the snapshot, or Qdrant with
``--vector-store qdrant``), writes ``manifest.json`` and swaps ``current.json`` with a
conditional PUT. Result: ``{status: published|unchanged, snapshot_id, uri, chunks, vectors,
counts, pointer_uri, previous_snapshot_id, index}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from llmops.corpus import ingest
from llmops.corpus.embedding import load_embedder
from llmops.corpus.vectorstore import LocalVectorIndex, QdrantVectorStore, VectorStore, urllib_transport
from llmops.io.s3 import client_from_env
from llmops.jobs.common import optional_env, setup_logging, write_result

log = setup_logging("llmops.jobs.corpus_publish")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--force", default="false", choices=["true", "false"],
                        help="publish (re-embed, swap, emit the asset) even when the live snapshot is the same")
    parser.add_argument("--vector-store", default="local", choices=["local", "qdrant"])
    parser.add_argument("--qdrant-url", default=optional_env("LLMOPS_QDRANT_URL") or "")
    parser.add_argument("--experiment", default="llmops-corpus")
    parser.add_argument("--scratch", default=None)
    return parser.parse_args(argv)


def store_factory(args: argparse.Namespace) -> Callable[[str, int, Path], VectorStore]:
    """Build the configured vector store for a snapshot."""
    def build(snapshot_id: str, dim: int, folder: Path) -> VectorStore:
        if args.vector_store == "qdrant":
            if not args.qdrant_url:
                raise SystemExit("--vector-store qdrant needs --qdrant-url (or LLMOPS_QDRANT_URL)")
            transport = urllib_transport(args.qdrant_url, optional_env("LLMOPS_QDRANT_API_KEY"))
            return QdrantVectorStore(transport, corpus=args.corpus, snapshot_id=snapshot_id, dim=dim)
        return LocalVectorIndex(folder, dim)

    return build


def main(argv: list[str] | None = None) -> int:
    """Publish the run."""
    args = parse_args(argv)
    result = ingest.publish_run(client_from_env(), args.bucket, args.corpus, args.run_id,
                                embedder=load_embedder(), store_factory=store_factory(args),
                                force=args.force == "true", scratch=ingest.scratch_dir(args.scratch))
    log.info("%s: snapshot sha256-%s", result["status"], result["snapshot_id"])
    write_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
