"""Eval sets: a JSONL file of items plus a YAML file describing categories and gates.

Item schema (one JSON object a line)::

    {"id": "arithmetic-0001", "category": "arithmetic",
     "messages": [{"role": "user", "content": "What is 37+45?"}],   # or "prompt": "..."
     "reference": "82", "scorer": "exact_match"}

Bad input is refused with the file, the line and the field named, and the fix; nothing is
skipped silently. Input is bounded (:mod:`llmops.core.limits`): a line is at most
``EVALSET_LINE_MAX_BYTES``, a set at most ``EVALSET_MAX_ITEMS`` items, and lines are read one
at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.core.fields import (
    INPUT_ERRORS,
    DocumentError,
    kind,
    load_yaml_file,
    parse_json,
    require_mapping,
    require_number,
    require_str,
    short_repr,
    unknown_keys,
)
from llmops.core.limits import (
    EVALSET_CONFIG_MAX_BYTES,
    EVALSET_FILE_MAX_BYTES,
    EVALSET_LINE_MAX_BYTES,
    EVALSET_MAX_ITEMS,
    InputTooLargeError,
    check_size,
)
from llmops.evals.scorers import SCORERS

REQUIRED_FIELDS = ("id", "category", "reference", "scorer")


class EvalSetError(ValueError):
    """An eval set that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class EvalItem:
    """One eval item, with its prompt as chat messages."""

    id: str
    category: str
    messages: tuple[dict[str, str], ...]
    reference: str
    scorer: str


@dataclass(frozen=True)
class CategoryConfig:
    """Gate settings of one category: absolute floor for a first model, allowed drop vs champion."""

    min_score: float = 0.0
    max_drop: float = 0.02


@dataclass(frozen=True)
class EvalSet:
    """A loaded eval set: its items, its category config and its content revision."""

    name: str
    path: Path
    revision: str
    items: tuple[EvalItem, ...]
    categories: dict[str, CategoryConfig] = field(default_factory=dict)

    def by_category(self) -> dict[str, list[EvalItem]]:
        """Items grouped by category, in file order."""
        groups: dict[str, list[EvalItem]] = {}
        for item in self.items:
            groups.setdefault(item.category, []).append(item)
        return groups

    def limited(self, per_category: int) -> EvalSet:
        """The first ``per_category`` items of each category (smoke runs)."""
        kept = [i for items in self.by_category().values() for i in items[:per_category]]
        return EvalSet(self.name, self.path, self.revision, tuple(kept), self.categories)


CONFIG_KEYS = frozenset({"name", "description", "file", "seed", "items", "defaults", "categories", "scorers"})
"""Top-level keys of an eval set's YAML; any other is a typo and refused."""
CATEGORY_KEYS = frozenset({"description", "scorer", "items", "min_score", "max_drop"})
"""Keys of one category in the YAML (only ``min_score`` and ``max_drop`` are read: the gate's settings)."""
ITEM_KEYS = frozenset({"id", "category", "messages", "prompt", "reference", "scorer"})
"""Keys of one JSONL item."""
ROLES = ("system", "user", "assistant")


def load_evalset(config_path: Path) -> EvalSet:
    """Load an eval set from its YAML description (which names its JSONL file).

    Raises :class:`EvalSetError` naming the file, the line or field and the fix, for any bad
    input: a file over its size limit (:mod:`llmops.core.limits`), not UTF-8, not YAML/JSON, a
    wrong type, a repeated key, an unknown key, a ``file`` outside the eval set's folder.
    """
    config_path = Path(config_path)
    try:
        config = load_yaml_file(config_path, EVALSET_CONFIG_MAX_BYTES, limit_name="EVALSET_CONFIG_MAX_BYTES")
        config = require_mapping(config, config_path, "(top level)",
                                 "write name, file and categories as top-level keys")
        unknown_keys(config, CONFIG_KEYS, config_path)
        for key in ("name", "file", "categories"):
            if key not in config:
                raise DocumentError(config_path, key, "missing field", f"add `{key}:` (see include/evalsets/)")
        name = require_str(config["name"], config_path, "name", "set the eval set's name, e.g. synthetic_chat_v1")
        categories = _categories(config["categories"], config_path)
        data = data_path(config["file"], config_path)
    except INPUT_ERRORS as exc:
        raise EvalSetError(_message(exc, config_path)) from None
    items = load_items(data, allowed_categories=set(categories))
    return EvalSet(name=name, path=data, revision=file_revision(data),
                   items=tuple(items), categories=categories)


def _message(exc: DocumentError | InputTooLargeError, source: Path | str) -> str:
    return f"{source}: {exc.field}: {exc.problem}; fix: {exc.fix}"


def _categories(raw: Any, config_path: Path) -> dict[str, CategoryConfig]:
    if raw is None:
        raw = {}
    raw = require_mapping(raw, config_path, "categories", "map each category name to its settings, "
                          "e.g. `arithmetic: {min_score: 0.5, max_drop: 0.02}`")
    categories = {}
    for name, spec in raw.items():
        where = f"categories.{name}"
        spec = require_mapping({} if spec is None else spec, config_path, where,
                               "write the category's settings as a mapping (or `{}`)")
        unknown_keys(spec, CATEGORY_KEYS, config_path, where)
        values = {key: float(require_number(spec[key], config_path, f"{where}.{key}",
                                            "write a fraction between 0 and 1, e.g. 0.5", minimum=0, maximum=1))
                  for key in ("min_score", "max_drop") if key in spec}
        categories[name] = CategoryConfig(**values)
    return categories


def data_path(raw: Any, config_path: Path) -> Path:
    """The JSONL file named by ``file``: a relative path inside the eval set's folder."""
    file = require_str(raw, config_path, "file", "name the JSONL file next to the YAML, e.g. my_set_v1.jsonl")
    relative = Path(file)
    if relative.is_absolute() or ".." in relative.parts or "\0" in file:
        raise DocumentError(config_path, "file", f"{short_repr(file)} is outside the eval set's folder",
                            "name a file in the same folder as the YAML (no absolute path, no '..')")
    if not (config_path.parent / relative).is_file():
        raise DocumentError(config_path, "file", f"{short_repr(file)} is not a file next to the YAML",
                            "name the eval set's JSONL file, in the same folder as the YAML")
    return config_path.parent / relative


def load_items(path: Path, allowed_categories: set[str] | None = None) -> list[EvalItem]:
    """Parse and check every line of a JSONL eval file (each line, and the item count, bounded)."""
    try:
        return _read_items(Path(path), allowed_categories)
    except INPUT_ERRORS as exc:
        raise EvalSetError(_message(exc, exc.source if isinstance(exc, DocumentError) else path)) from None


def _read_items(path: Path, allowed_categories: set[str] | None) -> list[EvalItem]:
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for lineno, line in lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        check_size(str(path), f"line {lineno}", len(items) + 1, EVALSET_MAX_ITEMS,
                   "split the eval set into several sets", name="EVALSET_MAX_ITEMS", unit="items")
        try:
            raw = parse_json(line, where)
        except DocumentError as exc:
            raise EvalSetError(f"{where}: {exc.problem}; fix: {exc.fix}") from None
        item = _parse_item(raw, where, allowed_categories)
        if item.id in seen:
            raise EvalSetError(f"{where}: field 'id' {item.id!r} duplicates line {seen[item.id]}; "
                               "fix: give each item its own id")
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise EvalSetError(f"{path}: no items; fix: write one JSON object a line (see llmops.evals.evalset)")
    return items


def lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, each at most EVALSET_LINE_MAX_BYTES, never the whole file at once."""
    fix = "keep each item under the limit (shorten its prompt or reference)"
    try:
        handle = open(path, "rb")  # closed by the `with` below
    except FileNotFoundError:
        raise EvalSetError(f"{path}: eval set file not found; fix: check `file:` in the eval set's YAML") from None
    except OSError as exc:
        raise EvalSetError(f"{path}: cannot be read ({exc.strerror or exc}); fix: check the path") from None
    with handle:
        check_size(str(path), "the file", os.fstat(handle.fileno()).st_size, EVALSET_FILE_MAX_BYTES,
                   "split the eval set into several sets", name="EVALSET_FILE_MAX_BYTES")
        for lineno, raw in enumerate(iter(lambda: handle.readline(EVALSET_LINE_MAX_BYTES + 1), b""), start=1):
            check_size(str(path), f"line {lineno}", len(raw.rstrip(b"\r\n")), EVALSET_LINE_MAX_BYTES, fix,
                       name="EVALSET_LINE_MAX_BYTES")
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise EvalSetError(f"{path}:{lineno}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; "
                                   "fix: save the file as UTF-8") from None
            yield lineno, text


def _parse_item(raw: Any, where: str, allowed_categories: set[str] | None) -> EvalItem:
    if not isinstance(raw, dict):
        raise EvalSetError(f"{where}: expected a JSON object, got {kind(raw)}; "
                           "fix: write one {\"id\", \"category\", \"prompt\", \"reference\", \"scorer\"} object a line")
    for key in raw:
        if key not in ITEM_KEYS:
            raise EvalSetError(f"{where}: field {short_repr(key)} is not an item field; "
                               f"fix: remove it or use one of {sorted(ITEM_KEYS)}")
    for key in REQUIRED_FIELDS:
        if key not in raw or raw[key] in (None, ""):
            raise EvalSetError(f"{where}: field {key!r} is missing or empty; fix: set it (every item needs "
                               f"{', '.join(REQUIRED_FIELDS)})")
    item_id = _text(raw["id"], where, "id", numbers=True)
    category = _text(raw["category"], where, "category")
    reference = _text(raw["reference"], where, "reference", numbers=True)
    scorer = _text(raw["scorer"], where, "scorer")
    if scorer not in SCORERS:
        raise EvalSetError(f"{where}: field 'scorer' is {scorer!r}; use one of {sorted(SCORERS)}")
    if allowed_categories and category not in allowed_categories:
        raise EvalSetError(f"{where}: field 'category' {category!r} is not declared in the eval set's "
                           f"YAML categories {sorted(allowed_categories)}; fix: declare it under `categories:` "
                           "or correct the item")
    if "messages" in raw:
        messages = raw["messages"]
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages)):
            raise EvalSetError(f"{where}: field 'messages' must be a non-empty list of {{role, content}}, got "
                               f"{kind(messages)}; fix: write [{{\"role\": \"user\", \"content\": \"...\"}}]")
        for index, message in enumerate(messages):
            if set(message) - {"role", "content"}:
                raise EvalSetError(f"{where}: field 'messages[{index}]' has keys {sorted(message)}; "
                                   "fix: keep only role and content")
            if message["role"] not in ROLES:
                raise EvalSetError(f"{where}: field 'messages[{index}].role' is {short_repr(message['role'])}; "
                                   f"fix: use one of {list(ROLES)}")
            _text(message["content"], where, f"messages[{index}].content")
    elif "prompt" in raw:
        messages = [{"role": "user", "content": _text(raw["prompt"], where, "prompt")}]
    else:
        raise EvalSetError(f"{where}: needs field 'messages' (chat) or 'prompt' (text); fix: add one of them")
    return EvalItem(id=item_id, category=category,
                    messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
                    reference=reference, scorer=scorer)


def _text(value: Any, where: str, field: str, *, numbers: bool = False) -> str:
    """A non-empty string field (a whole number too, for ``id`` and ``reference``), as text."""
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        expected = "a non-empty string" + (" or a whole number" if numbers else "")
        raise EvalSetError(f"{where}: field {field!r} must be {expected}, got {kind(value)}; "
                           f"fix: write it as a JSON string, e.g. \"{field}\": \"...\"")
    return value


def file_revision(path: Path) -> str:
    """Content revision of an eval file: the first 16 hex of its SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
