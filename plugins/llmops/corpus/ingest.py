"""The I/O of a re-ingestion run: list sources, parse a shard, validate the run, publish it.

Each function is one pod job's work (see ``llmops.jobs.corpus_*``); decisions are delegated to
the pure modules (:mod:`.checks`, :mod:`.plan`, :mod:`.chunking`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from llmops.corpus import checks, snapshot
from llmops.corpus.chunking import chunk_elements
from llmops.corpus.config import ParserConfig, Taxonomy, load_suite_dict
from llmops.corpus.parsers import UnreadableDocument, format_of, parse_document
from llmops.corpus.shards import shard_count, shard_of
from llmops.io.s3 import is_not_found, list_prefix, parse_s3_uri, read_json, s3_uri, write_json

log = logging.getLogger(__name__)

POINTER_HISTORY = 10


class PublishConflict(RuntimeError):
    """The live pointer changed while this run was publishing; the message says what to do."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Plan


def plan_sources(s3: Any, source_uri: str, bucket: str, corpus: str, run_id: str, *,
                 docs_per_shard: int, max_shards: int) -> dict[str, Any]:
    """List the source prefix once and write ``sources.jsonl`` (the listing every shard reads)."""
    src_bucket, prefix = parse_s3_uri(source_uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    objects = [o for o in list_prefix(s3, src_bucket, prefix) if not o.key.endswith("/")]
    shards = shard_count(len(objects), docs_per_shard, max_shards)
    lines = []
    for obj in objects:
        doc_id = obj.key[len(prefix):]
        lines.append(json.dumps({"doc_id": doc_id, "bucket": src_bucket, "key": obj.key, "size": obj.size,
                                 "etag": obj.etag.strip('"'), "shard": shard_of(doc_id, shards)}))
    key = snapshot.run_prefix(corpus, run_id) + "sources.jsonl"
    s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode() if lines else b"")
    log.info("%d source documents under %s in %d shards -> %s", len(objects), source_uri, shards, s3_uri(bucket, key))
    plan = {"source_uri": source_uri, "documents": len(objects), "shards": shards, "sources_uri": s3_uri(bucket, key),
            "run_prefix": snapshot.run_prefix(corpus, run_id), "planned_at": _now()}
    write_json(s3, bucket, snapshot.run_prefix(corpus, run_id) + "plan.json", plan)
    return plan


def read_plan(s3: Any, bucket: str, corpus: str, run_id: str) -> dict[str, Any]:
    """The run's plan (written by :func:`plan_sources`)."""
    return read_json(s3, bucket, snapshot.run_prefix(corpus, run_id) + "plan.json")


def read_sources(s3: Any, bucket: str, corpus: str, run_id: str) -> Iterator[dict[str, Any]]:
    """Stream the run's source listing, one document at a time."""
    key = snapshot.run_prefix(corpus, run_id) + "sources.jsonl"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for raw in body.iter_lines():
        if raw.strip():
            yield json.loads(raw)


# ---------------------------------------------------------------------------------------------
# Parse


def parse_shard(s3: Any, bucket: str, corpus: str, run_id: str, shard: int, config: ParserConfig,
                scratch: Path) -> dict[str, Any]:
    """Parse the shard's documents, stream their chunks to Parquet, upload it and the shard report."""
    parquet_key, report_key = snapshot.shard_keys(corpus, run_id, shard)
    local = scratch / Path(parquet_key).name
    chunked: list[str] = []
    rejected: dict[str, str] = {}
    counts: dict[str, int] = {}
    documents = 0
    with snapshot.ChunkWriter(local) as writer:
        for source in read_sources(s3, bucket, corpus, run_id):
            if source["shard"] != shard:
                continue
            documents += 1
            doc_id = source["doc_id"]
            try:
                data = s3.get_object(Bucket=source["bucket"], Key=source["key"])["Body"].read()
            except ClientError as exc:
                if not is_not_found(exc):
                    raise  # transient: fail the pod, the retry parses the shard again
                rejected[doc_id] = "source object vanished between listing and parsing"
                continue
            try:
                elements = parse_document(doc_id, data, config)
            except UnreadableDocument as exc:
                rejected[doc_id] = exc.reason
                log.warning("rejected %s: %s", doc_id, exc.reason)
                continue
            rows = list(chunk_elements(elements, config.chunking, doc_id=doc_id,
                                       source_uri=s3_uri(source["bucket"], source["key"]),
                                       source_sha256=hashlib.sha256(data).hexdigest(), fmt=format_of(doc_id),
                                       parser_version=config.version))
            for row in rows:
                counts[row.content_type] = counts.get(row.content_type, 0) + 1
            writer.write(rows)
            chunked.append(doc_id)
    s3.upload_file(str(local), bucket, parquet_key)
    report = {"shard": shard, "documents": documents, "chunked": chunked, "rejected": rejected,
              "rows": writer.rows, "sha256": writer.sha256, "counts": counts, "parser_version": config.version,
              "parquet_uri": s3_uri(bucket, parquet_key)}
    write_json(s3, bucket, report_key, report)
    local.unlink()
    return {key: report[key] for key in ("shard", "documents", "rows", "sha256", "counts", "parquet_uri")} | {
        "chunked": len(chunked), "rejected": len(rejected)}


# ---------------------------------------------------------------------------------------------
# Validate


@dataclass
class ValidationOutcome:
    """What :func:`validate_run` decided and where it wrote its evidence."""

    verdict: checks.Verdict
    snapshot_id: str
    report: dict[str, Any]
    docs_dir: Path | None
    quarantine_uri: str | None


def read_pointer(s3: Any, bucket: str, corpus: str) -> tuple[dict[str, Any] | None, str | None]:
    """The live pointer and its ETag (``(None, None)`` before the first publish)."""
    key = snapshot.pointer_key(corpus)
    try:
        answer = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None, None
        raise
    return json.loads(answer["Body"].read()), answer["ETag"]


def _shard_reports(s3: Any, bucket: str, corpus: str, run_id: str, shards: int) -> list[dict[str, Any]]:
    reports = []
    for shard in range(shards):
        _, report_key = snapshot.shard_keys(corpus, run_id, shard)
        try:
            reports.append(read_json(s3, bucket, report_key))
        except FileNotFoundError as exc:
            raise RuntimeError(f"{exc}: shard {shard} of {shards} has no report; fix: re-run the parse task "
                               f"for that shard") from exc
    return reports


def _download_parts(s3: Any, bucket: str, reports: list[dict[str, Any]], folder: Path) -> list[Path]:
    paths = []
    for report in reports:
        _, key = parse_s3_uri(report["parquet_uri"])
        local = folder / Path(key).name
        s3.download_file(bucket, key, str(local))
        paths.append(local)
    return paths


def _failing_mask(table: Any, taxonomy: Taxonomy, config: ParserConfig) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    text_len = pc.utf8_length(table.column("text"))
    bad = pc.invert(pc.is_in(table.column("content_type"), value_set=pa.array(list(taxonomy.content_types))))
    for name in ("chunk_id", "doc_id", "source_uri", "content_type", "text", "parser_version"):
        bad = pc.or_kleene(bad, pc.is_null(table.column(name)))
    bad = pc.or_kleene(bad, pc.less(text_len, config.chunking.min_chars))
    bad = pc.or_kleene(bad, pc.greater(text_len, config.chunking.max_chars))
    return pc.fill_null(bad, True)


def scan_parts(paths: list[Path], taxonomy: Taxonomy, config: ParserConfig, validator: Any,
               failing: snapshot.ChunkWriter, *, batch_rows: int = 50_000,
               engine: str = "pyarrow") -> tuple[checks.ContentTypeTally, set[str]]:
    """Stream the parts once: GX suite per batch, content-type tally, chunked documents, failing rows.

    Memory is bounded by one batch (plus the set of document ids, which grows with documents,
    not chunks).
    """
    import pyarrow.compute as pc

    tally = checks.ContentTypeTally()
    chunked_docs: set[str] = set()
    for table in snapshot.iter_batches(paths, batch_rows, engine=engine):
        validator.validate(table.to_pandas())
        counts = pc.value_counts(pc.fill_null(table.column("content_type"), "<null>")).to_pylist()
        batch_counts = {item["values"]: item["counts"] for item in counts}
        new_here = checks.new_types(batch_counts, taxonomy.content_types)
        examples: dict[str, list[dict[str, str]]] = {}
        for content_type in new_here:
            rows = table.filter(pc.equal(pc.fill_null(table.column("content_type"), "<null>"), content_type))
            rows = rows.slice(0, checks.DEFAULT_EXAMPLES).to_pylist()
            examples[content_type] = [
                {"chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "text": (r["text"] or "")[:200]} for r in rows]
        tally.add_counts(batch_counts, examples)
        chunked_docs.update(pc.unique(table.column("doc_id")).drop_null().to_pylist())
        bad = table.filter(_failing_mask(table, taxonomy, config))
        if bad.num_rows:
            failing.write_table(bad)
    return tally, chunked_docs


def validate_run(s3: Any, bucket: str, corpus: str, run_id: str, *, taxonomy: Taxonomy,
                 config: ParserConfig, allow_type_drop: bool, scratch: Path, batch_rows: int = 50_000,
                 engine: str = "pyarrow") -> ValidationOutcome:
    """Run the schema checks on the run's parse output and decide; quarantine on failure.

    Streams the parts in batches through the GX suite and the content-type tally; failing rows
    are streamed to the quarantine Parquet file. Writes ``runs/<run>/validation.json`` either way.
    """
    from llmops.corpus.gx_checks import SnapshotValidator

    reports = _shard_reports(s3, bucket, corpus, run_id, read_plan(s3, bucket, corpus, run_id)["shards"])
    parts_dir = scratch / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    paths = _download_parts(s3, bucket, reports, parts_dir)
    validator = SnapshotValidator(load_suite_dict(taxonomy, config.chunking), docs_dir=scratch / "data_docs")
    failing = snapshot.ChunkWriter(scratch / "failing-rows.parquet")
    tally, chunked_docs = scan_parts(paths, taxonomy, config, validator, failing, batch_rows=batch_rows,
                                     engine=engine)
    failing.close()
    rejected = {doc: reason for report in reports for doc, reason in report["rejected"].items()}
    parity = checks.check_parity((s["doc_id"] for s in read_sources(s3, bucket, corpus, run_id)),
                                 chunked_docs, rejected)
    pointer, _ = read_pointer(s3, bucket, corpus)
    previous_counts = (pointer or {}).get("counts")
    verdict = checks.snapshot_verdict(tally, taxonomy.content_types, previous_counts, parity,
                            checks.merge_expectation_results(validator.batches), allow_type_drop=allow_type_drop)
    snap_id = snapshot.snapshot_id([r["sha256"] for r in reports], config.version, taxonomy.version)
    docs_dir = validator.build_data_docs()
    report = {"run_id": run_id, "corpus": corpus, "snapshot_id": snap_id, "parser_version": config.version,
              "taxonomy_version": taxonomy.version, "validated_at": _now(), "rejected_documents": rejected,
              "previous_snapshot_id": (pointer or {}).get("snapshot_id"), "previous_counts": previous_counts,
              "parts": [{"uri": r["parquet_uri"], "sha256": r["sha256"], "rows": r["rows"]} for r in reports],
              "verdict": verdict.to_dict()}
    quarantine_uri = None
    if not verdict.passed:
        qprefix = snapshot.quarantine_prefix(corpus, run_id)
        if failing.rows:
            s3.upload_file(str(failing.path), bucket, qprefix + "failing-rows.parquet")
        report["quarantine"] = {"uri": s3_uri(bucket, qprefix), "failing_rows": failing.rows,
                                "failing_rows_uri": s3_uri(bucket, qprefix + "failing-rows.parquet") if failing.rows
                                else None, "staged_parts": [r["parquet_uri"] for r in reports]}
        write_json(s3, bucket, qprefix + "report.json", report)
        quarantine_uri = s3_uri(bucket, qprefix)
    write_json(s3, bucket, snapshot.run_prefix(corpus, run_id) + "validation.json", report)
    return ValidationOutcome(verdict=verdict, snapshot_id=snap_id, report=report, docs_dir=docs_dir,
                             quarantine_uri=quarantine_uri)


# ---------------------------------------------------------------------------------------------
# Publish


def publish_run(s3: Any, bucket: str, corpus: str, run_id: str, *, embedder: Any, store_factory: Any,
                force: bool, scratch: Path, batch_rows: int = 2_048, engine: str = "pyarrow") -> dict[str, Any]:
    """Copy the validated parts to their content-addressed snapshot, embed and index them, swap the pointer.

    Refuses a run whose validation did not pass. With the live pointer already on the same
    snapshot and no ``force``, nothing changes (``status: unchanged``). The pointer is written
    with a conditional PUT on the ETag read before publishing, so two publishes never
    interleave silently.
    """
    validation = read_json(s3, bucket, snapshot.run_prefix(corpus, run_id) + "validation.json")
    verdict = validation["verdict"]
    if not verdict["passed"]:
        raise RuntimeError(f"run {run_id} did not pass validation ({verdict['message']}); nothing to publish")
    snap_id = validation["snapshot_id"]
    pointer, etag = read_pointer(s3, bucket, corpus)
    if pointer and pointer.get("snapshot_id") == snap_id and not force:
        log.info("the live snapshot is already sha256-%s; nothing to publish", snap_id)
        return {"status": "unchanged", "snapshot_id": snap_id,
                "pointer_uri": s3_uri(bucket, snapshot.pointer_key(corpus))}
    prefix = snapshot.snapshot_prefix(corpus, snap_id)
    parts = []
    local_parts = []
    (scratch / "parts").mkdir(parents=True, exist_ok=True)
    for index, part in enumerate(validation["parts"]):
        _, src_key = parse_s3_uri(part["uri"])
        dst_key = f"{prefix}part-{index:05d}.parquet"
        s3.copy_object(Bucket=bucket, Key=dst_key, CopySource={"Bucket": bucket, "Key": src_key})
        local = scratch / "parts" / f"part-{index:05d}.parquet"
        s3.download_file(bucket, dst_key, str(local))
        local_parts.append(local)
        parts.append({"uri": s3_uri(bucket, dst_key), "sha256": part["sha256"], "rows": part["rows"]})
    store = store_factory(snap_id, embedder.dim, scratch / "index")
    vectors = 0
    for table in snapshot.iter_batches(local_parts, batch_rows, columns=["chunk_id", "doc_id", "content_type", "text"],
                                       engine=engine):
        rows = table.to_pydict()
        store.add(rows["chunk_id"], embedder.embed(rows["text"]),
                  [{"doc_id": d, "content_type": t} for d, t in zip(rows["doc_id"], rows["content_type"], strict=True)])
        vectors += table.num_rows
    index = store.publish()
    if index.get("kind") == "local":
        for path in sorted((scratch / "index").iterdir()):
            s3.upload_file(str(path), bucket, f"{prefix}index/{path.name}")
        index["uri"] = s3_uri(bucket, f"{prefix}index/")
    counts = verdict["counts"]
    manifest = {"snapshot_id": snap_id, "corpus": corpus, "uri": s3_uri(bucket, prefix), "parts": parts,
                "chunks": sum(p["rows"] for p in parts), "counts": counts,
                "parser_version": validation["parser_version"], "taxonomy_version": validation["taxonomy_version"],
                "rejected_documents": validation["rejected_documents"], "run_id": run_id,
                "embedding_model": embedder.name, "index": index, "vectors": vectors, "published_at": _now()}
    write_json(s3, bucket, prefix + "manifest.json", manifest)
    history = ([{k: pointer.get(k) for k in ("snapshot_id", "published_at", "run_id")}] + pointer.get("history", [])
               if pointer else [])[:POINTER_HISTORY]
    new_pointer = {k: manifest[k] for k in ("snapshot_id", "corpus", "uri", "chunks", "counts", "parser_version",
                                            "taxonomy_version", "run_id", "published_at", "embedding_model")}
    new_pointer |= {"manifest_uri": s3_uri(bucket, prefix + "manifest.json"), "index": index, "history": history}
    swap_pointer(s3, bucket, corpus, new_pointer, expected_etag=etag)
    return {"status": "published", "snapshot_id": snap_id, "uri": s3_uri(bucket, prefix), "chunks": manifest["chunks"],
            "vectors": vectors, "counts": counts, "parser_version": manifest["parser_version"],
            "pointer_uri": s3_uri(bucket, snapshot.pointer_key(corpus)), "previous_snapshot_id":
            (pointer or {}).get("snapshot_id"), "index": index}


def swap_pointer(s3: Any, bucket: str, corpus: str, pointer: Mapping[str, Any], *, expected_etag: str | None) -> str:
    """Write ``current.json`` only if it is still what was read (``IfMatch``), or absent (``IfNoneMatch``)."""
    key = snapshot.pointer_key(corpus)
    condition = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
    body = (json.dumps(dict(pointer), indent=2) + "\n").encode()
    try:
        answer = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise PublishConflict(f"{s3_uri(bucket, key)} changed while this run was publishing; fix: re-run the "
                                  f"publish task (it re-reads the live pointer)") from exc
        raise
    return str(answer.get("ETag", ""))


def scratch_dir(base: str | None = None) -> Path:
    """A fresh scratch folder (the pod's ``scratch`` volume, or the system temp dir)."""
    return Path(tempfile.mkdtemp(prefix="corpus-", dir=base))
