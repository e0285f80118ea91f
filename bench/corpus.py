"""Corpus validation benchmark: Great Expectations vs a plain pandas check, and memory vs corpus size.

    PYTHONPATH=plugins .venv/bin/python bench/corpus.py                 # 100k and 1M chunks
    PYTHONPATH=plugins .venv/bin/python bench/corpus.py --sizes 20000 100000

1. **Throughput**: the same DataFrame batches of synthetic chunks (0.1% with an undeclared
   content type, a few over-long texts) are checked by the pipeline's GX suite
   (:class:`llmops.corpus.gx_checks.SnapshotValidator`) and by plain pandas code applying the
   same rules (type in the taxonomy, required fields non-null, length within bounds, chunk-id
   pattern). Prints chunks/s of each and the ratio GX / pandas, measured in the same run.
2. **Memory**: for each size, a fresh subprocess streams a Parquet snapshot of that many chunks
   through the real validation path (:func:`llmops.corpus.ingest.scan_parts`: GX per batch,
   content-type tally, failing rows) and reports its peak RSS during the scan (sampled every
   5 ms from /proc, so the import-time peak does not mask it), once per reader (pyarrow, the
   pipeline's; Hugging Face ``datasets`` streaming, for comparison). The pipeline's peak must
   stay flat with corpus size (ratio of the largest to the smallest size close to 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

BATCH_ROWS = 50_000
DOCS_PER_CHUNKS = 20  # chunks per document in the synthetic corpus


def write_synthetic_snapshot(path: Path, rows: int, batch_rows: int = BATCH_ROWS, seed: int = 0) -> Path:
    """A Parquet part of ``rows`` synthetic chunks, written batch by batch (bounded memory)."""
    import numpy as np
    import pyarrow as pa

    from llmops.corpus import snapshot

    rng = np.random.default_rng(seed)
    types = np.array(["heading", "paragraph", "list_item", "code", "table"])
    words = np.array("the model serves tokens from weights staged by digest under a canary".split())
    with snapshot.ChunkWriter(path, batch_rows=batch_rows) as writer:
        for start in range(0, rows, batch_rows):
            n = min(batch_rows, rows - start)
            index = np.arange(start, start + n)
            content_type = types[rng.integers(0, len(types), n)].astype(object)
            content_type[index % 1000 == 7] = "chart"  # 0.1%: what a parser upgrade would emit
            lengths = rng.integers(5, 60, n)
            text = [" ".join(words[rng.integers(0, len(words), k)]) for k in lengths]
            for i in np.nonzero(index % 5000 == 11)[0]:
                text[i] = "x" * 900  # over the 800-character bound
            table = pa.table({
                "chunk_id": [f"{i:064x}" for i in index],
                "doc_id": [f"doc-{i // DOCS_PER_CHUNKS}" for i in index],
                "source_uri": [f"s3://llmops-corpus/sources/bench/doc-{i // DOCS_PER_CHUNKS}.md" for i in index],
                "source_sha256": ["0" * 64] * n,
                "format": ["markdown"] * n,
                "content_type": content_type.tolist(),
                "text": text,
                "n_chars": [len(t) for t in text],
                "position": (index % DOCS_PER_CHUNKS).tolist(),
                "element_index": (index % DOCS_PER_CHUNKS).tolist(),
                "parser_version": ["v1"] * n,
            })
            writer.write_table(table)
    return path


def pandas_check(frame, content_types: list[str], min_chars: int, max_chars: int) -> dict[str, int]:
    """The suite's rules in plain pandas: unexpected count per rule."""
    out = {"content_type_in_set": int((~frame["content_type"].isin(content_types)).sum())}
    for column in ("chunk_id", "doc_id", "source_uri", "content_type", "text", "parser_version"):
        out[f"{column}_not_null"] = int(frame[column].isna().sum())
    lengths = frame["text"].str.len()
    out["text_length"] = int(((lengths < min_chars) | (lengths > max_chars)).sum())
    out["chunk_id_pattern"] = int((~frame["chunk_id"].str.fullmatch(r"[0-9a-f]{64}")).sum())
    return out


def throughput(path: Path, rows: int) -> dict[str, float]:
    """chunks/s of the GX suite and of the pandas check on the same batches."""
    from llmops.corpus import snapshot
    from llmops.corpus.config import load_parser_config, load_suite_dict, load_taxonomy
    from llmops.corpus.gx_checks import SnapshotValidator

    taxonomy, config = load_taxonomy(), load_parser_config("v1")
    validator = SnapshotValidator(load_suite_dict(taxonomy, config.chunking))
    frames = [t.to_pandas() for t in snapshot.iter_batches([path], BATCH_ROWS, engine="pyarrow")]
    validator.validate(frames[0].head(100))  # warm-up: GX builds its metric graph once
    gx_s = pandas_s = 0.0
    gx_unexpected = pd_unexpected = 0
    for frame in frames:
        start = time.perf_counter()
        outcome = validator.validate(frame)
        gx_s += time.perf_counter() - start
        gx_unexpected += sum(o["unexpected_count"] for o in outcome)
        start = time.perf_counter()
        counts = pandas_check(frame, list(taxonomy.content_types), config.chunking.min_chars,
                              config.chunking.max_chars)
        pandas_s += time.perf_counter() - start
        pd_unexpected += sum(counts.values())
    if gx_unexpected != pd_unexpected:
        raise SystemExit(f"GX found {gx_unexpected} unexpected values, pandas {pd_unexpected}: not the same rules")
    return {"rows": rows, "gx_chunks_per_s": rows / gx_s, "pandas_chunks_per_s": rows / pandas_s,
            "gx_over_pandas": (rows / gx_s) / (rows / pandas_s), "unexpected": gx_unexpected}


MEMORY_WORKER = r"""
import json, resource, sys, tempfile, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from llmops.corpus import ingest, snapshot
from llmops.corpus.config import load_parser_config, load_suite_dict, load_taxonomy
from llmops.corpus.gx_checks import SnapshotValidator

def current_rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20

taxonomy, config = load_taxonomy(), load_parser_config("v1")
validator = SnapshotValidator(load_suite_dict(taxonomy, config.chunking))
before = current_rss_mb()
samples = [before]
done = threading.Event()
def sample():
    while not done.is_set():
        samples.append(current_rss_mb())
        time.sleep(0.005)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
with tempfile.TemporaryDirectory() as tmp:
    failing = snapshot.ChunkWriter(Path(tmp) / "failing.parquet")
    tally, docs = ingest.scan_parts([Path(sys.argv[1])], taxonomy, config, validator, failing,
                                    batch_rows=int(sys.argv[2]), engine=sys.argv[4])
    failing.close()
done.set()
sampler.join()
print(json.dumps({"chunks": tally.total, "documents": len(docs), "failing_rows": failing.rows,
                  "before_scan_rss_mb": before, "peak_rss_mb": max(samples),
                  "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_memory(path: Path, engine: str) -> dict[str, float]:
    """Peak RSS of a fresh process streaming the snapshot through the validation path."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", MEMORY_WORKER, str(path), str(BATCH_ROWS), str(ROOT / "plugins"),
                          engine],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print a table with the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--throughput-rows", type=int, default=100_000)
    parser.add_argument("--engines", nargs="+", default=["pyarrow", "datasets"], choices=["pyarrow", "datasets"],
                        help="readers to measure (the pipeline streams with pyarrow)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        folder = Path(tmp)
        sample = write_synthetic_snapshot(folder / "throughput.parquet", args.throughput_rows)
        speed = throughput(sample, args.throughput_rows)
        results["throughput"] = speed
        print(f"validation of {speed['rows']} chunks (same batches, same rules, {speed['unexpected']} unexpected):")
        print(f"  GX suite      {speed['gx_chunks_per_s']:>12,.0f} chunks/s")
        print(f"  plain pandas  {speed['pandas_chunks_per_s']:>12,.0f} chunks/s")
        print(f"  ratio GX/pandas {speed['gx_over_pandas']:.2f}")
        memory: dict[str, dict[int, dict[str, float]]] = {engine: {} for engine in args.engines}
        for size in sorted(args.sizes):
            part = write_synthetic_snapshot(folder / f"snapshot-{size}.parquet", size)
            for engine in args.engines:
                row = memory[engine][size] = peak_memory(part, engine) | {"parquet_mb": part.stat().st_size / 2**20}
                print(f"  {engine:>8} {size:>9,} chunks: peak RSS during the scan {row['peak_rss_mb']:6.0f} MB "
                      f"(before it {row['before_scan_rss_mb']:.0f} MB; parquet {row['parquet_mb']:.0f} MB, "
                      f"{row['failing_rows']} failing rows)")
            part.unlink()
        smallest, largest = min(args.sizes), max(args.sizes)
        results["memory"] = {engine: {str(k): v for k, v in rows.items()} for engine, rows in memory.items()}
        for engine, rows in memory.items():
            ratio = rows[largest]["peak_rss_mb"] / rows[smallest]["peak_rss_mb"]
            results[f"peak_rss_ratio_{engine}"] = ratio
            print(f"{engine}: peak RSS ratio {largest:,} / {smallest:,} chunks = {ratio:.2f} "
                  f"(corpus {largest / smallest:.0f}x larger; flat means close to 1)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
