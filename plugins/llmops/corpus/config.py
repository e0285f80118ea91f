"""Versioned corpus configuration: the content-type taxonomy, parser configurations and the
expectation suite, all read from ``include/corpus/``.

A parser configuration (``parsers/<version>.yaml``) maps each format's structural elements
to content types and sets the chunking bounds. It is deliberately *not* checked against the
taxonomy here: a parser that emits an undeclared type is exactly what the snapshot's schema
check must catch and report.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.config.settings import PROJECT_ROOT
from llmops.core.fields import INPUT_ERRORS, kind, load_yaml_file, parse_json, read_file, short_repr
from llmops.core.limits import CORPUS_CONFIG_MAX_BYTES

CORPUS_CONFIG_DIR = PROJECT_ROOT / "include" / "corpus"
FORMATS = ("html", "markdown", "pdf", "docx", "text")
_VERSION = re.compile(r"^v[0-9]+$")
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class CorpusConfigError(ValueError):
    """A corpus configuration file is wrong; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class Taxonomy:
    """The declared content types of chunks, with a version."""

    version: int
    content_types: tuple[str, ...]
    descriptions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkRules:
    """Bounds of chunk text (characters) and the overlap between consecutive chunks of one element."""

    max_chars: int
    min_chars: int = 1
    overlap_chars: int = 0


@dataclass(frozen=True)
class ParserConfig:
    """One versioned parser configuration."""

    version: str
    description: str
    libraries: dict[str, str]
    formats: dict[str, dict[str, Any]]
    chunking: ChunkRules
    path: str = ""

    def emitted_types(self) -> set[str]:
        """Every content type this configuration can emit."""
        found: set[str] = set()
        for rules in self.formats.values():
            for value in rules.values():
                if isinstance(value, dict):
                    found.update(value.values())
                elif isinstance(value, str):
                    found.add(value)
        return found


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise CorpusConfigError(f"{path}: no such file; fix: create it or pass the right version/path")
    try:
        return load_yaml_file(path, CORPUS_CONFIG_MAX_BYTES, limit_name="CORPUS_CONFIG_MAX_BYTES")
    except INPUT_ERRORS as exc:
        raise CorpusConfigError(f"{path}: {exc.field}: {exc.problem}; fix: {exc.fix}") from None


def _whole(value: Any, path: Path, field: str, default: int | None = None) -> int:
    """A whole-number field (``true`` and ``"12"`` are not numbers here)."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorpusConfigError(f"{path}: field '{field}' must be a whole number, got {kind(value)}; "
                                "fix: write it without quotes, e.g. 800")
    return value


def load_taxonomy(path: str | Path = CORPUS_CONFIG_DIR / "taxonomy.yaml") -> Taxonomy:
    """Read and validate the taxonomy file."""
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise CorpusConfigError(f"{path}: expected a mapping with 'version' and 'content_types', got {kind(data)}; "
                                "fix: write them as top-level keys")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CorpusConfigError(f"{path}: field 'version' is {short_repr(version)}; fix: set a positive integer")
    types = data.get("content_types")
    if not isinstance(types, dict) or not types:
        raise CorpusConfigError(f"{path}: field 'content_types' must be a non-empty mapping of type -> description, "
                                f"got {kind(types)}; fix: write `content_types: {{paragraph: ..., ...}}`")
    for name, description in types.items():
        if not isinstance(name, str) or not _TYPE_NAME.match(name):
            raise CorpusConfigError(f"{path}: content type {short_repr(name)} is not a lowercase identifier "
                                    f"(a-z, 0-9, _; at most 40 chars); fix: rename it")
        if not isinstance(description, str) or not description.strip():
            raise CorpusConfigError(f"{path}: content_types.{name} has no description; fix: say what it holds")
    return Taxonomy(version=version, content_types=tuple(sorted(types)), descriptions=dict(types))


def parser_config_path(version: str, config_dir: str | Path = CORPUS_CONFIG_DIR) -> Path:
    """``include/corpus/parsers/<version>.yaml``; the version must look like ``v<number>``."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise CorpusConfigError(f"parser version {short_repr(version)}: must look like 'v1', 'v2' (a file "
                                f"include/corpus/parsers/<version>.yaml)")
    return Path(config_dir) / "parsers" / f"{version}.yaml"


def load_parser_config(version_or_path: str | Path, config_dir: str | Path = CORPUS_CONFIG_DIR) -> ParserConfig:
    """Read a parser configuration by version (``"v1"``) or by path, and validate its shape."""
    text = str(version_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) else parser_config_path(text, config_dir)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise CorpusConfigError(f"{path}: expected a mapping, got {kind(data)}; fix: write version, formats "
                                "and chunking as top-level keys")
    version = data.get("version")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise CorpusConfigError(f"{path}: field 'version' is {short_repr(version)}; fix: set it to the file's name, "
                                "e.g. 'v1'")
    if path.stem != version:
        raise CorpusConfigError(f"{path}: field 'version' is {version!r} but the file is {path.name}; "
                                f"fix: make them agree (the version names the file)")
    formats = data.get("formats")
    if not isinstance(formats, dict):
        raise CorpusConfigError(f"{path}: field 'formats' must be a mapping of format -> rules, got {kind(formats)}; "
                                f"fix: write rules for each of {FORMATS}")
    missing = [f for f in FORMATS if f not in formats]
    if missing:
        raise CorpusConfigError(f"{path}: formats {missing} are not configured; fix: add rules for each of {FORMATS}")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise CorpusConfigError(f"{path}: unknown formats {unknown}; fix: use only {FORMATS}")
    for fmt, rules in formats.items():
        if not isinstance(rules, dict):
            raise CorpusConfigError(f"{path}: formats.{fmt} must be a mapping, got {kind(rules)}; "
                                    "fix: map each element to a content type")
        for key, value in rules.items():
            values = value.values() if isinstance(value, dict) else [value]
            for item in values:
                if not isinstance(item, str) or not _TYPE_NAME.match(item):
                    raise CorpusConfigError(f"{path}: formats.{fmt}.{key} maps to {short_repr(item)}, not a content "
                                            f"type name; fix: use a lowercase identifier")
    chunking = data.get("chunking") or {}
    if not isinstance(chunking, dict) or "max_chars" not in chunking or set(chunking) - {
            "max_chars", "min_chars", "overlap_chars"}:
        raise CorpusConfigError(f"{path}: field 'chunking' needs integer max_chars (and optional min_chars, "
                                f"overlap_chars), got {kind(chunking)}; fix: write "
                                "`chunking: {max_chars: 800, min_chars: 1, overlap_chars: 0}`")
    rules = ChunkRules(max_chars=_whole(chunking["max_chars"], path, "chunking.max_chars"),
                       min_chars=_whole(chunking.get("min_chars"), path, "chunking.min_chars", 1),
                       overlap_chars=_whole(chunking.get("overlap_chars"), path, "chunking.overlap_chars", 0))
    if not 1 <= rules.min_chars <= rules.max_chars or not 0 <= rules.overlap_chars < rules.max_chars // 2:
        raise CorpusConfigError(f"{path}: chunking bounds {rules} are inconsistent; fix: "
                                f"1 <= min_chars <= max_chars and 0 <= overlap_chars < max_chars/2")
    libraries = data.get("libraries") or {}
    if not isinstance(libraries, dict) or not all(isinstance(v, str) for v in libraries.values()):
        raise CorpusConfigError(f"{path}: field 'libraries' must map library names to versions, got "
                                f"{kind(libraries)}; fix: write e.g. `libraries: {{beautifulsoup4: \"4.12\"}}`")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise CorpusConfigError(f"{path}: field 'description' must be a string, got {kind(description)}; "
                                "fix: write one line for humans")
    return ParserConfig(version=version, description=description,
                        libraries=dict(libraries), formats=formats, chunking=rules, path=str(path))


def load_suite_dict(taxonomy: Taxonomy, chunking: ChunkRules,
                    path: str | Path = CORPUS_CONFIG_DIR / "expectations.json") -> dict[str, Any]:
    """The expectation suite as a dict, its ``$taxonomy.*`` / ``$chunking.*`` placeholders filled."""
    path = Path(path)
    if not path.is_file():
        raise CorpusConfigError(f"{path}: no such file; fix: restore include/corpus/expectations.json")
    try:
        suite = parse_json(read_file(path, CORPUS_CONFIG_MAX_BYTES, limit_name="CORPUS_CONFIG_MAX_BYTES"), path)
    except INPUT_ERRORS as exc:
        raise CorpusConfigError(f"{path}: {exc.field}: {exc.problem}; fix: {exc.fix}") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations", []), list):
        raise CorpusConfigError(f"{path}: expected an object with an 'expectations' list, got {kind(suite)}; "
                                "fix: restore include/corpus/expectations.json")
    values: dict[str, Any] = {
        "$taxonomy.content_types": list(taxonomy.content_types),
        "$chunking.max_chars": chunking.max_chars,
        "$chunking.min_chars": chunking.min_chars,
    }
    suite = copy.deepcopy(suite)
    for index, expectation in enumerate(suite.get("expectations", [])):
        if (not isinstance(expectation, dict) or not isinstance(expectation.get("type"), str)
                or not isinstance(expectation.get("kwargs"), dict)):
            raise CorpusConfigError(f"{path}: expectations[{index}] needs 'type' (a string) and 'kwargs' (an object), "
                                    f"got {kind(expectation)}; fix: write {{\"type\": ..., \"kwargs\": {{...}}}}")
        for key, value in list(expectation["kwargs"].items()):
            if isinstance(value, str) and value.startswith("$"):
                if value not in values:
                    raise CorpusConfigError(f"{path}: expectations[{index}].kwargs.{key} = {short_repr(value)} is "
                                            f"not a known placeholder; fix: use one of {sorted(values)}")
                expectation["kwargs"][key] = values[value]
    return suite
