"""Elements -> chunks (pure): bounded text pieces with stable, content-addressed ids.

A chunk id is the SHA-256 of (document id, position, content type, text): the same document
parsed the same way gives the same ids, so snapshots of an unchanged corpus are identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from llmops.corpus.config import ChunkRules
from llmops.corpus.parsers import Element


@dataclass(frozen=True)
class Chunk:
    """One row of a corpus snapshot (see :data:`llmops.corpus.snapshot.CHUNK_SCHEMA`)."""

    chunk_id: str
    doc_id: str
    source_uri: str
    source_sha256: str
    format: str
    content_type: str
    text: str
    n_chars: int
    position: int
    element_index: int
    parser_version: str

    def to_row(self) -> dict[str, object]:
        """The row as a dict (Arrow/pandas friendly)."""
        return asdict(self)


def split_text(text: str, rules: ChunkRules) -> list[str]:
    """Split ``text`` into pieces of at most ``rules.max_chars``, at whitespace where possible.

    Consecutive pieces share ``rules.overlap_chars`` characters. Text within the bound is one piece.
    """
    text = text.strip()
    if len(text) <= rules.max_chars:
        return [text] if text else []
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + rules.max_chars, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + 1, end + 1)
            # Cut at the last space unless that leaves a piece under half the bound.
            if cut > start + rules.max_chars // 2:
                end = cut
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        if end >= len(text):
            break
        start = max(end - rules.overlap_chars, start + 1)
    return pieces


def chunk_id(doc_id: str, position: int, content_type: str, text: str) -> str:
    """Content address of a chunk."""
    digest = hashlib.sha256()
    for part in (doc_id, str(position), content_type, text):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def chunk_elements(elements: Iterable[Element], rules: ChunkRules, *, doc_id: str, source_uri: str,
                   source_sha256: str, fmt: str, parser_version: str) -> Iterator[Chunk]:
    """The chunks of one document's elements, in reading order (``position`` counts from 0)."""
    position = 0
    for element_index, element in enumerate(elements):
        for piece in split_text(element.text, rules):
            yield Chunk(chunk_id=chunk_id(doc_id, position, element.content_type, piece), doc_id=doc_id,
                        source_uri=source_uri, source_sha256=source_sha256, format=fmt,
                        content_type=element.content_type, text=piece, n_chars=len(piece), position=position,
                        element_index=element_index, parser_version=parser_version)
            position += 1
