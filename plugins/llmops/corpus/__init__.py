"""Corpus re-ingestion: parse source documents into typed chunks, check them against the
content-type taxonomy with Great Expectations, and publish a content-addressed snapshot.

Pure logic (taxonomy, parser configuration, chunking, the comparison with the previous
snapshot, document parity, shard planning) lives in small modules with no I/O; S3, MLflow
and Great Expectations are touched only by :mod:`.store`, :mod:`.gx_checks`,
:mod:`.ingest` and the ``llmops.jobs.corpus_*`` pod jobs.
"""
