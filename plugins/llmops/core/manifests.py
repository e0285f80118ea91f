"""The weight-drop manifest: what a drop claims to hold, validated with no I/O.

- The **weight-drop manifest** (``manifest.json``, written last in ``s3://<drops>/<model>/<revision>/``,
  so its arrival marks a complete drop) lists every file of the drop with its size and SHA-256,
  plus the model family, source, revision and the digest-pinned serving runtime image.
  :func:`load_drop_manifest` (raw bytes, size-limited) and :func:`parse_drop_manifest` (parsed
  JSON) check it strictly and collect every problem into one
  :class:`ManifestError` whose message names the manifest URI, each field as a JSON path
  (``files[3].sha256``) and the fix.
  What a deployment pins is :mod:`llmops.core.deployment`'s; both report problems the same way
  (:class:`ManifestError`).

The **weight digest** (:func:`weight_digest`) is the identity of a drop: the same files with
the same content give the same digest whatever the revision name or delivery time, so a
re-delivered drop is recognised and processed once.

Only the standard library (and :mod:`llmops.core.podjob` for the image-digest rule) is imported:
DAG files may load this module at parse time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from llmops.config.images import is_pinned_by_digest
from llmops.core.fields import INPUT_ERRORS, json_type, parse_json, short_repr
from llmops.core.limits import MANIFEST_MAX_BYTES, MANIFEST_MAX_FILES, MAX_REPORTED_PROBLEMS, check_size

MANIFEST_NAME = "manifest.json"
"""File name of the weight-drop manifest at the root of a drop prefix."""

STAGED_MARKER = "_staged.json"
"""File name of the marker written last at the root of a staged (content-addressed) prefix."""

QUARANTINE_PREFIX = "quarantine/"
"""Prefix of the drops bucket where rejected drops are copied (so ``quarantine`` is no model name)."""

RESERVED_PATHS: dict[str, str] = {
    MANIFEST_NAME: "the drop manifest does not list itself",
    STAGED_MARKER: "the name is reserved for the staging marker of the content-addressed copy",
}
"""Root-level paths a manifest may not list, with the reason."""

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SHA256_ANY_CASE = re.compile(r"^[0-9a-fA-F]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_PATH = 900  # S3 keys are at most 1024 bytes; leave room for the model/digest prefix.

_DROP_FIELDS = ("model", "model_family", "source", "revision", "runtime_image", "created_at", "files")
_FILE_FIELDS = ("path", "size", "sha256")

Problem = tuple[str, str, str]
"""(field as a JSON path, what is wrong, how to fix it)."""


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the manifest URI, each field and its fix."""

    def __init__(self, uri: str, problems: list[Problem]) -> None:
        self.uri = uri
        self.problems = problems
        self.field = problems[0][0] if problems else ""
        lines = [f"{field}: {problem}; fix: {fix}" for field, problem, fix in problems[:MAX_REPORTED_PROBLEMS]]
        if len(problems) > MAX_REPORTED_PROBLEMS:
            lines.append(f"... and {len(problems) - MAX_REPORTED_PROBLEMS} more problems")
        if len(problems) == 1:
            message = f"{uri}: {lines[0]}"
        else:
            message = f"{uri}: {len(problems)} problems:\n" + "\n".join(f"  - {line}" for line in lines)
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """The problems as JSON-ready data (for a quarantine ``reason.json``; the first
        :data:`~llmops.core.limits.MAX_REPORTED_PROBLEMS` of them, and how many there are)."""
        return {"manifest": self.uri, "problem_count": len(self.problems),
                "problems": [{"field": f, "problem": p, "fix": x}
                             for f, p, x in self.problems[:MAX_REPORTED_PROBLEMS]]}


@dataclass(frozen=True)
class ManifestFile:
    """One file of a drop: its path relative to the drop root, size in bytes and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """``{"path", "size", "sha256"}``."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def of(cls, item: ManifestFile | Mapping[str, Any]) -> ManifestFile:
        """``item`` itself, or a validated :class:`ManifestFile` from a ``{"path", "size", "sha256"}`` mapping."""
        if isinstance(item, ManifestFile):
            return item
        problems: list[Problem] = []
        entry = _check_file(item, "file", problems)
        if entry is None or problems:
            raise ManifestError("<file list>", problems)
        return entry


@dataclass(frozen=True)
class WeightDropManifest:
    """A validated weight-drop manifest (build it with :func:`parse_drop_manifest`)."""

    model: str
    model_family: str
    source: str
    revision: str
    runtime_image: str
    created_at: str
    files: tuple[ManifestFile, ...]
    uri: str = field(default="", compare=False)

    @cached_property
    def weight_digest(self) -> str:
        """The drop's identity: :func:`weight_digest` of its files."""
        return weight_digest(self.files)

    @property
    def total_size(self) -> int:
        """Bytes in all files of the drop."""
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (what :func:`parse_drop_manifest` reads back)."""
        return {
            "model": self.model, "model_family": self.model_family, "source": self.source,
            "revision": self.revision, "runtime_image": self.runtime_image, "created_at": self.created_at,
            "files": [f.to_dict() for f in self.files],
        }


def load_drop_manifest(body: bytes, uri: str, *, expect_model: str | None = None,
                       expect_revision: str | None = None) -> WeightDropManifest:
    """Validate the raw bytes of a ``manifest.json`` and return the manifest.

    Everything wrong is a :class:`ManifestError` naming ``uri``: over
    :data:`~llmops.core.limits.MANIFEST_MAX_BYTES`, not UTF-8, not JSON, a repeated key, NaN or
    Infinity, nesting too deep, then every problem :func:`parse_drop_manifest` finds. A reader of
    an S3 object reads at most ``MANIFEST_MAX_BYTES + 1`` bytes (see
    :func:`llmops.core.limits.read_at_most`) and passes them here.
    """
    data = json_document(body, uri, "the manifest", "list only the drop's files; a manifest is a few KiB per "
                                                    "thousand files")
    return parse_drop_manifest(data, uri, expect_model=expect_model, expect_revision=expect_revision)


def json_document(body: bytes, uri: str, what: str, size_fix: str) -> Any:
    """Strict JSON of a manifest-like object of at most ``MANIFEST_MAX_BYTES``; every problem
    (size, encoding, syntax, repeated keys, NaN, nesting) is a :class:`ManifestError` naming ``uri``."""
    try:
        check_size(uri, what, len(body), MANIFEST_MAX_BYTES, size_fix, name="MANIFEST_MAX_BYTES")
        return parse_json(body, uri)
    except INPUT_ERRORS as exc:
        raise ManifestError(uri, [(exc.field, exc.problem, exc.fix)]) from None


def parse_drop_manifest(data: Any, uri: str, *, expect_model: str | None = None,
                        expect_revision: str | None = None) -> WeightDropManifest:
    """Validate ``data`` (the parsed ``manifest.json``) and return the manifest.

    ``uri`` names the manifest in error messages. ``expect_model`` / ``expect_revision``, when
    given (the drop's location ``<model>/<revision>/``), must equal the manifest's own values.
    Every problem is collected; :class:`ManifestError` lists them all.
    """
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        raise ManifestError(uri, [("$", f"is a JSON {json_type(data)}, not an object",
                                   f"write a JSON object with the fields {', '.join(_DROP_FIELDS)}")])
    for key in data:
        if key not in _DROP_FIELDS:
            problems.append((short_repr(key) if not isinstance(key, str) else key[:100], "is not a manifest field",
                             f"remove it, or rename it to one of {', '.join(_DROP_FIELDS)}"))
    values: dict[str, str] = {}
    for name in _DROP_FIELDS[:-1]:
        value = data.get(name)
        if name not in data:
            problems.append((name, "is missing", f"add \"{name}\": {FIELD_HINTS[name]}"))
        elif not isinstance(value, str) or not value.strip():
            problems.append((name, f"must be a non-empty string, got {short_repr(value)}",
                             f"set it to {FIELD_HINTS[name]}"))
        else:
            values[name] = value
    for name in ("model", "revision"):
        value = values.get(name)
        if value is not None and not NAME_RE.match(value):
            problems.append((name, f"{short_repr(value)} cannot be a path segment",
                             "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"))
    if values.get("model") == QUARANTINE_PREFIX.rstrip("/"):
        problems.append(("model", "'quarantine' is reserved for the drops bucket's quarantine prefix",
                         "choose another model name"))
    for name, expected in (("model", expect_model), ("revision", expect_revision)):
        if expected is not None and name in values and values[name] != expected:
            problems.append((name, f"{short_repr(values[name])} does not match the drop location ({expected!r})",
                             f"set \"{name}\": \"{expected}\" or move the drop to the matching prefix"))
    image = values.get("runtime_image")
    if image is not None and not is_pinned_by_digest(image):
        problems.append(("runtime_image", f"{short_repr(image)} is not pinned by digest",
                         "use the image's content digest: repo@sha256:<64 lowercase hex>"))
    created_problem = timestamp_problem(values["created_at"]) if "created_at" in values else None
    if created_problem:
        problems.append(("created_at", created_problem, FIELD_HINTS["created_at"]))
    files = _check_files(data.get("files"), "files" in data, problems)
    if problems:
        raise ManifestError(uri, problems)
    return WeightDropManifest(
        model=values["model"], model_family=values["model_family"], source=values["source"],
        revision=values["revision"], runtime_image=values["runtime_image"], created_at=values["created_at"],
        files=tuple(files), uri=uri,
    )


FIELD_HINTS = {
    "model": "the model name (e.g. \"tiny-chat\")",
    "model_family": "the architecture family (e.g. \"llama\")",
    "source": "where the checkpoint comes from (a training run, a URI)",
    "revision": "the revision name, equal to the drop's folder (e.g. \"2026-11-23\")",
    "runtime_image": "the serving image pinned by digest, repo@sha256:<64 hex>",
    "created_at": "an ISO-8601 time with a time zone, e.g. \"2026-11-23T12:00:00Z\"",
}


def _check_files(raw: Any, present: bool, problems: list[Problem]) -> list[ManifestFile]:
    if not present:
        problems.append(("files", "is missing",
                         "add \"files\": [{\"path\", \"size\", \"sha256\"}, ...] for every file"))
        return []
    if not isinstance(raw, list):
        problems.append(("files", f"must be a list, got a JSON {json_type(raw)}",
                         "write a list of {\"path\", \"size\", \"sha256\"} objects"))
        return []
    if not raw:
        problems.append(("files", "is empty", "list every file of the drop with its size and sha256"))
        return []
    if len(raw) > MANIFEST_MAX_FILES:
        problems.append(("files", f"lists {len(raw)} files, over the limit of {MANIFEST_MAX_FILES} "
                                  "(llmops.core.limits.MANIFEST_MAX_FILES)",
                         "merge small files (e.g. shard the checkpoint into fewer, larger files)"))
        return []
    files: list[ManifestFile] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(raw):
        where = f"files[{index}]"
        entry = _check_file(item, where, problems)
        if entry is None:
            continue
        if entry.path in first_index:
            first = first_index[entry.path]
            problems.append((f"{where}.path", f"{short_repr(entry.path)} is listed twice (first at files[{first}])",
                             "list each file once"))
            continue
        first_index[entry.path] = index
        files.append(entry)
    return files


def _check_file(item: Any, where: str, problems: list[Problem]) -> ManifestFile | None:
    if not isinstance(item, Mapping):
        problems.append((where, f"is a JSON {json_type(item)}, not an object",
                         "write {\"path\": ..., \"size\": ..., \"sha256\": ...}"))
        return None
    before = len(problems)
    for key in item:
        if key not in _FILE_FIELDS:
            problems.append((f"{where}.{str(key)[:100]}", "is not a file field", "keep only path, size and sha256"))
    path, size, digest = item.get("path"), item.get("size"), item.get("sha256")
    if "path" not in item:
        problems.append((f"{where}.path", "is missing", "add the file's path relative to the drop root"))
    else:
        problem = path_problem(path)
        if problem:
            problems.append((f"{where}.path", problem[0], problem[1]))
    if "size" not in item:
        problems.append((f"{where}.size", "is missing", "add the file's size in bytes"))
    elif not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append((f"{where}.size", f"must be an integer >= 0, got {short_repr(size)}",
                         "write the size in bytes as a JSON integer (e.g. from `stat -c %s`)"))
    if "sha256" not in item:
        problems.append((f"{where}.sha256", "is missing", "add the file's SHA-256 (from `sha256sum`)"))
    elif not isinstance(digest, str) or not SHA256_RE.match(digest):
        fix = ("write it in lowercase" if isinstance(digest, str) and _SHA256_ANY_CASE.match(digest)
               else "write the 64 lowercase hex characters that `sha256sum` prints")
        problems.append((f"{where}.sha256", f"{short_repr(digest)} is not a SHA-256 hex digest", fix))
    if len(problems) > before:
        return None
    return ManifestFile(path=path, size=size, sha256=digest)


def path_problem(path: Any) -> tuple[str, str] | None:
    """Why ``path`` cannot name a file of a drop, with the fix; ``None`` when it can.

    A drop path is relative POSIX (``a/b.safetensors``): no leading ``/``, no ``.``/``..``
    or empty segments, no backslash or control character, and not a reserved root name.
    """
    if not isinstance(path, str) or not path:
        return f"must be a non-empty string, got {short_repr(path)}", "write the path relative to the drop root"
    fix = "write it relative to the drop root, e.g. \"model-00001-of-00002.safetensors\" or \"sub/file.bin\""
    if len(path.encode(errors="replace")) > _MAX_PATH:
        return f"is {len(path.encode(errors='replace'))} bytes long (at most {_MAX_PATH})", "shorten the path"
    if path.startswith("/"):
        return f"{short_repr(path)} is absolute", fix
    if "\\" in path or _CONTROL.search(path):
        return (f"{short_repr(path)} contains a backslash or a control character",
                "use '/' between folders and printable names")
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return f"{short_repr(path)} has an empty, '.' or '..' segment", fix
    if path in RESERVED_PATHS:
        return f"{path!r} cannot be listed: {RESERVED_PATHS[path]}", "remove the entry (or rename the file)"
    return None


def weight_digest(files: Iterable[ManifestFile | Mapping[str, Any]]) -> str:
    """The identity of a set of files: SHA-256 (hex) over their sorted ``(path, sha256)`` list.

    Canonical form, in ``sha256sum``'s own output format: one line ``"<sha256>  <path>\\n"``
    per file, sorted by path (code-point order, the same as UTF-8 byte order), concatenated
    and UTF-8 encoded. Sizes, revision, source and times are left out: the same bytes under
    the same names are the same drop. From a shell, in the drop folder::

        sha256sum <files...> | LC_ALL=C sort -k2 | sha256sum

    Raises ``ValueError`` when a path is listed twice (the list would not name one set of bytes).
    """
    entries = sorted((f.path, f.sha256) for f in map(ManifestFile.of, files))
    for (a, _), (b, _) in zip(entries, entries[1:], strict=False):
        if a == b:
            raise ValueError(f"weight_digest: path {a!r} is listed twice; list each file once")
    canonical = "".join(f"{digest}  {path}\n" for path, digest in entries)
    return hashlib.sha256(canonical.encode()).hexdigest()


def timestamp_problem(value: str) -> str | None:
    """Why ``value`` is not an ISO-8601 time with a time zone, or ``None``."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"{short_repr(value)} is not an ISO-8601 time"
    if parsed.tzinfo is None:
        return f"{short_repr(value)} has no time zone"
    return None
