"""Source documents -> typed elements, with pinned real parsers per format.

``parse_document(name, data, config)`` returns the document's elements in reading order, each
with the ``content_type`` the parser configuration gives its structural kind. A document that
cannot be read raises :class:`UnreadableDocument` with the reason (it goes to the rejected
list, never silently away).

Libraries: beautifulsoup4 (+lxml) for HTML, markdown-it-py for Markdown, pypdf for PDF,
python-docx for DOCX; plain text needs none. Imports are local to each parser so that a
process only pays for the formats it reads.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from llmops.corpus.config import ParserConfig

EXTENSIONS = {
    ".html": "html", ".htm": "html",
    ".md": "markdown", ".markdown": "markdown",
    ".txt": "text", ".text": "text",
    ".pdf": "pdf",
    ".docx": "docx",
}
_BLANK_LINES = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"\s+")


class UnreadableDocument(ValueError):
    """The document cannot be parsed; ``reason`` says why (and goes to the rejected list)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Element:
    """One structural element of a document: its content type and its text."""

    content_type: str
    text: str


def format_of(name: str) -> str:
    """The format of a source object from its extension; unknown extensions are unreadable."""
    suffix = PurePosixPath(name).suffix.lower()
    try:
        return EXTENSIONS[suffix]
    except KeyError:
        raise UnreadableDocument(f"unsupported format {suffix or '(no extension)'!r}; supported: "
                                 f"{', '.join(sorted(EXTENSIONS))}") from None


def parse_document(name: str, data: bytes, config: ParserConfig) -> list[Element]:
    """Parse one document into elements; raise :class:`UnreadableDocument` when it cannot be read."""
    fmt = format_of(name)
    parser = {"html": _html, "markdown": _markdown, "text": _text, "pdf": _pdf, "docx": _docx}[fmt]
    try:
        elements = [e for e in parser(data, config) if e.text]
    except UnreadableDocument:
        raise
    except Exception as exc:  # a parser library's own error: the file is damaged or not what it claims
        raise UnreadableDocument(f"{fmt} parser failed: {type(exc).__name__}: {exc}") from exc
    if not elements:
        raise UnreadableDocument(f"no text extracted from the {fmt} document (empty, scanned or image-only)")
    return elements


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableDocument(f"not UTF-8 text ({exc}); fix: re-encode the source as UTF-8") from exc


def _text(data: bytes, config: ParserConfig) -> Iterator[Element]:
    content_type = config.formats["text"]["block"]
    for block in _BLANK_LINES.split(_decode(data)):
        yield Element(content_type, _clean(block))


def _html(data: bytes, config: ParserConfig) -> Iterator[Element]:
    from bs4 import BeautifulSoup

    tags: dict[str, str] = config.formats["html"]["tags"]
    soup = BeautifulSoup(_decode(data), "lxml")
    for node in soup.find_all(list(tags)):
        # The outermost mapped element owns its text (a <p> inside an <li> is part of the item).
        if any(parent.name in tags for parent in node.parents):
            continue
        if node.name == "table":
            rows = [" | ".join(_clean(cell.get_text(" ")) for cell in tr.find_all(["th", "td"]))
                    for tr in node.find_all("tr")]
            yield Element(tags["table"], "\n".join(r for r in rows if r.strip()))
        elif node.name == "figure":
            caption = node.find("figcaption")
            image = node.find("img")
            text = caption.get_text(" ") if caption else (image.get("alt", "") if image else node.get_text(" "))
            yield Element(tags["figure"], _clean(text))
        else:
            yield Element(tags[node.name], _clean(node.get_text(" ")))


def _markdown(data: bytes, config: ParserConfig) -> Iterator[Element]:
    from markdown_it import MarkdownIt

    blocks: dict[str, str] = config.formats["markdown"]["blocks"]
    tokens = MarkdownIt("commonmark").enable("table").parse(_decode(data))
    depth_list_item = 0
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type == "list_item_open":
            depth_list_item += 1
        elif token.type == "list_item_close":
            depth_list_item -= 1
        elif token.type == "heading_open":
            yield Element(blocks["heading"], _clean(tokens[index + 1].content))
            index += 2
        elif token.type == "paragraph_open":
            inline = tokens[index + 1]
            children = [c for c in (inline.children or []) if not (c.type == "text" and not c.content.strip())]
            if depth_list_item:
                yield Element(blocks["list_item"], _clean(inline.content))
            elif len(children) == 1 and children[0].type == "image":
                image = children[0]
                alt = "".join(c.content for c in (image.children or [])) or image.content
                title = image.attrs.get("title") or ""
                yield Element(blocks["image"], _clean(f"{alt} {title}"))
            else:
                yield Element(blocks["paragraph"], _clean(inline.content))
            index += 2
        elif token.type in ("fence", "code_block"):
            yield Element(blocks[token.type if token.type in blocks else "code"], token.content.strip())
        elif token.type == "table_open":
            rows: list[str] = []
            cells: list[str] = []
            index += 1
            while tokens[index].type != "table_close":
                if tokens[index].type == "inline":
                    cells.append(_clean(tokens[index].content))
                elif tokens[index].type == "tr_close":
                    rows.append(" | ".join(cells))
                    cells = []
                index += 1
            yield Element(blocks["table"], "\n".join(rows))
        index += 1


def _pdf(data: bytes, config: ParserConfig) -> Iterator[Element]:
    from pypdf import PdfReader

    content_type = config.formats["pdf"]["block"]
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        raise UnreadableDocument("the PDF is encrypted; fix: publish an unencrypted copy")
    for page in reader.pages:
        for block in _BLANK_LINES.split(page.extract_text() or ""):
            yield Element(content_type, _clean(block))


def _docx(data: bytes, config: ParserConfig) -> Iterator[Element]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    rules = config.formats["docx"]
    document = docx.Document(io.BytesIO(data))
    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(child, document)
            style = paragraph.style.name if paragraph.style is not None else ""
            content_type = next((t for prefix, t in rules["styles"].items() if style.startswith(prefix)),
                                rules["default"])
            yield Element(content_type, _clean(paragraph.text))
        elif tag == "tbl":
            table = Table(child, document)
            rows = [" | ".join(_clean(cell.text) for cell in row.cells) for row in table.rows]
            yield Element(rules["table"], "\n".join(r for r in rows if r.strip()))
