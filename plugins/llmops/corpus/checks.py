"""Pure decisions about a corpus snapshot: content types, drift against the previous snapshot,
document parity, and the verdict with its reasons. No I/O: callers pass plain data.

- **New types**: any content type outside the taxonomy fails the snapshot; the report gives
  each one's count and example chunks.
- **Vanished / fallen types**: a declared type present in the previous snapshot that is absent
  now, or whose share of chunks fell by more than ``max_share_drop`` (relative), is flagged; it
  fails the snapshot unless the run allows type drops (a deliberate removal).
- **Parity**: every source document yields chunks or is in the rejected list with a reason,
  never both, never neither; no chunk comes from a document that was not in the source listing.
- **Expectations**: every failed Great Expectations expectation (summed over batches) fails it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_EXAMPLES = 5
DEFAULT_MAX_SHARE_DROP = 0.5
DEFAULT_MIN_PREVIOUS_COUNT = 10


@dataclass
class ContentTypeTally:
    """Chunk counts per content type, with the first few example chunks of each type."""

    examples_per_type: int = DEFAULT_EXAMPLES
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def add(self, content_types: Iterable[str | None], chunk_ids: Iterable[str], doc_ids: Iterable[str],
            texts: Iterable[str | None]) -> None:
        """Count a batch of chunks (parallel columns)."""
        for content_type, cid, doc, text in zip(content_types, chunk_ids, doc_ids, texts, strict=True):
            key = "<null>" if content_type is None else str(content_type)
            self.counts[key] = self.counts.get(key, 0) + 1
            kept = self.examples.setdefault(key, [])
            if len(kept) < self.examples_per_type:
                kept.append({"chunk_id": cid, "doc_id": doc, "text": (text or "")[:200]})

    def add_counts(self, counts: Mapping[str, int], examples: Mapping[str, list[dict[str, str]]] | None = None) -> None:
        """Merge already-aggregated counts (e.g. a vectorised value_counts of a batch)."""
        for key, count in counts.items():
            self.counts[key] = self.counts.get(key, 0) + int(count)
        for key, items in (examples or {}).items():
            kept = self.examples.setdefault(key, [])
            kept.extend(items[: max(0, self.examples_per_type - len(kept))])

    @property
    def total(self) -> int:
        """All chunks counted."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class TypeChange:
    """A declared content type that vanished or fell sharply against the previous snapshot."""

    content_type: str
    kind: str  # "vanished" | "fell"
    previous_count: int
    current_count: int
    previous_share: float
    current_share: float

    def describe(self) -> str:
        """One line for the report."""
        if self.kind == "vanished":
            return f"{self.content_type}: vanished (previous snapshot had {self.previous_count} chunks, now 0)"
        return (f"{self.content_type}: fell from {self.previous_count} chunks ({self.previous_share:.1%}) to "
                f"{self.current_count} ({self.current_share:.1%})")


def new_types(counts: Mapping[str, int], declared: Iterable[str]) -> dict[str, int]:
    """Types with chunks that the taxonomy does not declare (``<null>`` included), with their counts."""
    known = set(declared)
    return {t: n for t, n in sorted(counts.items()) if n > 0 and t not in known}


def compare_with_previous(current: Mapping[str, int], previous: Mapping[str, int] | None, declared: Iterable[str],
                          *, max_share_drop: float = DEFAULT_MAX_SHARE_DROP,
                          min_previous_count: int = DEFAULT_MIN_PREVIOUS_COUNT) -> list[TypeChange]:
    """Declared types that vanished, or whose share of all chunks fell by more than ``max_share_drop``.

    Shares, not raw counts, are compared so that a smaller corpus is not read as every type
    falling; a type needs ``min_previous_count`` chunks before to be judged on its share
    (small counts are noise), but vanishing is flagged at any count.
    """
    if not previous:
        return []
    if not 0 < max_share_drop <= 1:
        raise ValueError(f"max_share_drop {max_share_drop}: must be in (0, 1]")
    previous_total = sum(previous.values()) or 1
    current_total = sum(current.values()) or 1
    changes = []
    for content_type in sorted(set(declared)):
        before = int(previous.get(content_type, 0))
        now = int(current.get(content_type, 0))
        if before == 0:
            continue
        before_share, now_share = before / previous_total, now / current_total
        if now == 0:
            changes.append(TypeChange(content_type, "vanished", before, now, before_share, 0.0))
        elif before >= min_previous_count and now_share < before_share * (1 - max_share_drop):
            changes.append(TypeChange(content_type, "fell", before, now, before_share, now_share))
    return changes


@dataclass(frozen=True)
class Parity:
    """Every source document is accounted for: chunked or rejected with a reason."""

    documents: int
    chunked: int
    rejected: int
    missing: tuple[str, ...]
    both: tuple[str, ...]
    unknown: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No document lost, none counted twice, no chunk without a listed source."""
        return not (self.missing or self.both or self.unknown)

    def problems(self, limit: int = 10) -> list[str]:
        """Human-readable parity failures (first ``limit`` documents of each kind)."""
        out = []
        for label, docs in (("documents with neither chunks nor a rejection", self.missing),
                            ("documents both chunked and rejected", self.both),
                            ("chunks from documents not in the source listing", self.unknown)):
            if docs:
                shown = ", ".join(docs[:limit]) + (f" (+{len(docs) - limit} more)" if len(docs) > limit else "")
                out.append(f"parity: {len(docs)} {label}: {shown}")
        return out


def check_parity(source_docs: Iterable[str], chunked_docs: Iterable[str], rejected: Mapping[str, str]) -> Parity:
    """Compare the source listing with the documents that produced chunks and the rejected ones."""
    sources = set(source_docs)
    chunked = set(chunked_docs)
    rejected_docs = {doc for doc, reason in rejected.items() if reason}
    unexplained = {doc for doc, reason in rejected.items() if not reason}
    missing = sorted((sources - chunked - rejected_docs) | (unexplained - chunked))
    return Parity(documents=len(sources), chunked=len(chunked & sources), rejected=len(rejected_docs & sources),
                  missing=tuple(missing), both=tuple(sorted(chunked & rejected_docs)),
                  unknown=tuple(sorted((chunked | rejected_docs) - sources)))


def merge_expectation_results(batches: Iterable[Iterable[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Sum per-batch expectation outcomes: ``[{type, column, success, unexpected_count, element_count}]``."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for batch in batches:
        for item in batch:
            key = (item["type"], item.get("column") or "")
            entry = merged.setdefault(key, {"type": key[0], "column": key[1], "success": True,
                                            "unexpected_count": 0, "element_count": 0, "examples": []})
            entry["success"] = entry["success"] and bool(item["success"])
            entry["unexpected_count"] += int(item.get("unexpected_count") or 0)
            entry["element_count"] += int(item.get("element_count") or 0)
            for value in item.get("examples") or []:
                if len(entry["examples"]) < DEFAULT_EXAMPLES and value not in entry["examples"]:
                    entry["examples"].append(value)
    return list(merged.values())


@dataclass(frozen=True)
class Verdict:
    """Whether a snapshot may be published, with every reason it may not."""

    passed: bool
    reasons: tuple[str, ...]
    new_types: dict[str, dict[str, Any]]
    type_changes: tuple[TypeChange, ...]
    parity: Parity
    failed_expectations: tuple[dict[str, Any], ...]
    counts: dict[str, int]

    @property
    def message(self) -> str:
        """The failure message: names new and missing types first, then the other reasons."""
        if self.passed:
            return f"snapshot passed: {sum(self.counts.values())} chunks in {len(self.counts)} content types"
        return "snapshot rejected: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        data = asdict(self)
        data["type_changes"] = [asdict(c) | {"describe": c.describe()} for c in self.type_changes]
        data["parity"] = asdict(self.parity) | {"ok": self.parity.ok}
        data["message"] = self.message
        return data


def snapshot_verdict(tally: ContentTypeTally, declared: Iterable[str], previous_counts: Mapping[str, int] | None,
           parity: Parity, expectation_results: Iterable[Mapping[str, Any]], *, allow_type_drop: bool = False,
           max_share_drop: float = DEFAULT_MAX_SHARE_DROP,
           min_previous_count: int = DEFAULT_MIN_PREVIOUS_COUNT) -> Verdict:
    """The publish verdict for a snapshot."""
    declared = tuple(declared)
    reasons: list[str] = []
    unknown = new_types(tally.counts, declared)
    if unknown:
        reasons.append("new content types not in the taxonomy: " + ", ".join(
            f"{t} ({n} chunks)" for t, n in unknown.items()) + "; fix: add them to include/corpus/taxonomy.yaml "
            "(and bump its version) or pin the previous parser version")
    changes = compare_with_previous(tally.counts, previous_counts, declared, max_share_drop=max_share_drop,
                                    min_previous_count=min_previous_count)
    if changes and not allow_type_drop:
        reasons.append("missing content types against the previous snapshot: " +
                       "; ".join(c.describe() for c in changes) +
                       "; fix: find why the parser stopped emitting them, or re-run with allow_type_drop")
    reasons.extend(parity.problems())
    failed = tuple(dict(e) for e in expectation_results if not e["success"])
    for expectation in failed:
        if expectation["type"] == "expect_column_values_to_be_in_set" and expectation["column"] == "content_type":
            continue  # already reported above with counts and examples
        reasons.append(f"expectation {expectation['type']} on {expectation['column'] or 'table'} failed for "
                       f"{expectation['unexpected_count']} of {expectation['element_count']} chunks "
                       f"(e.g. {expectation['examples'][:3]})")
    if unknown and not any(e["column"] == "content_type" for e in failed):
        # The GX suite and the tally must agree; a disagreement means the suite is stale.
        reasons.append("the expectation suite accepted types outside the taxonomy; fix: regenerate the suite")
    if tally.total == 0:
        reasons.append("the snapshot has no chunks")
    details = {t: {"count": n, "examples": tally.examples.get(t, [])} for t, n in unknown.items()}
    return Verdict(passed=not reasons, reasons=tuple(reasons), new_types=details, type_changes=tuple(changes),
                   parity=parity, failed_expectations=failed, counts=dict(sorted(tally.counts.items())))
