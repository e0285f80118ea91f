"""Eval sets: a JSONL file of items plus a YAML file describing categories and gates.

Item schema (one JSON object a line)::

    {"id": "arithmetic-0001", "category": "arithmetic",
     "messages": [{"role": "user", "content": "What is 37+45?"}],   # or "prompt": "..."
     "reference": "82", "scorer": "exact_match"}

Bad input is refused with the file, the line and the field named; nothing is
skipped silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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


def load_evalset(config_path: Path) -> EvalSet:
    """Load an eval set from its YAML description (which names its JSONL file)."""
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise EvalSetError(f"{config_path}: not valid YAML: {exc}") from exc
    for key in ("name", "file", "categories"):
        if key not in config:
            raise EvalSetError(f"{config_path}: missing field {key!r}")
    categories = {}
    for name, spec in (config["categories"] or {}).items():
        try:
            categories[name] = CategoryConfig(**{k: float(v) for k, v in (spec or {}).items()
                                                 if k in ("min_score", "max_drop")})
        except (TypeError, ValueError) as exc:
            raise EvalSetError(f"{config_path}: categories.{name}: {exc}") from exc
    data_path = config_path.parent / config["file"]
    items = load_items(data_path, allowed_categories=set(categories))
    return EvalSet(name=config["name"], path=data_path, revision=file_revision(data_path),
                   items=tuple(items), categories=categories)


def load_items(path: Path, allowed_categories: set[str] | None = None) -> list[EvalItem]:
    """Parse and check every line of a JSONL eval file."""
    if not path.exists():
        raise EvalSetError(f"{path}: eval set file not found")
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            raw: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{where}: not valid JSON ({exc})") from exc
        item = _parse_item(raw, where, allowed_categories)
        if item.id in seen:
            raise EvalSetError(f"{where}: field 'id' {item.id!r} duplicates line {seen[item.id]}")
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise EvalSetError(f"{path}: no items")
    return items


def _parse_item(raw: dict[str, Any], where: str, allowed_categories: set[str] | None) -> EvalItem:
    for key in REQUIRED_FIELDS:
        if key not in raw or raw[key] in (None, ""):
            raise EvalSetError(f"{where}: field {key!r} is missing or empty")
    if raw["scorer"] not in SCORERS:
        raise EvalSetError(f"{where}: field 'scorer' is {raw['scorer']!r}; use one of {sorted(SCORERS)}")
    if allowed_categories and raw["category"] not in allowed_categories:
        raise EvalSetError(f"{where}: field 'category' {raw['category']!r} is not declared in the eval set's "
                           f"YAML categories {sorted(allowed_categories)}")
    if "messages" in raw:
        messages = raw["messages"]
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages)):
            raise EvalSetError(f"{where}: field 'messages' must be a non-empty list of {{role, content}}")
    elif isinstance(raw.get("prompt"), str) and raw["prompt"]:
        messages = [{"role": "user", "content": raw["prompt"]}]
    else:
        raise EvalSetError(f"{where}: needs field 'messages' (chat) or 'prompt' (text)")
    return EvalItem(id=str(raw["id"]), category=str(raw["category"]),
                    messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
                    reference=str(raw["reference"]), scorer=raw["scorer"])


def file_revision(path: Path) -> str:
    """Content revision of an eval file: the first 16 hex of its SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
