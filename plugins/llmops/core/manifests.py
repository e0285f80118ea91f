"""Manifests: what a weight drop claims to hold, and what a deployment pins.

Two documents, both plain JSON, both validated here with no I/O:

- The **weight-drop manifest** (``manifest.json``, written last in ``s3://<drops>/<model>/<revision>/``,
  so its arrival marks a complete drop) lists every file of the drop with its size and SHA-256,
  plus the model family, source, revision and the digest-pinned serving runtime image.
  :func:`parse_drop_manifest` checks it strictly and collects every problem into one
  :class:`ManifestError` whose message names the manifest URI, each field as a JSON path
  (``files[3].sha256``) and the fix.
- The **deployment manifest** (:class:`DeploymentManifest`) pins everything a served model
  depends on: weight digest, runtime image digest and version, hardware-class config hashes,
  tokenizer and chat-template hashes.

The **weight digest** (:func:`weight_digest`) is the identity of a drop: the same files with
the same content give the same digest whatever the revision name or delivery time, so a
re-delivered drop is recognised and processed once.

Only the standard library (and :mod:`llmops.core.podjob` for the image-digest rule) is imported:
DAG files may load this module at parse time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from llmops.config.images import is_pinned_by_digest

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

DEPLOYMENT_SCHEMA_VERSION = 1

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
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
        lines = [f"{field}: {problem}; fix: {fix}" for field, problem, fix in problems]
        if len(lines) == 1:
            message = f"{uri}: {lines[0]}"
        else:
            message = f"{uri}: {len(lines)} problems:\n" + "\n".join(f"  - {line}" for line in lines)
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """The problems as JSON-ready data (for a quarantine ``reason.json``)."""
        return {"manifest": self.uri,
                "problems": [{"field": f, "problem": p, "fix": x} for f, p, x in self.problems]}


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


def parse_drop_manifest(data: Any, uri: str, *, expect_model: str | None = None,
                        expect_revision: str | None = None) -> WeightDropManifest:
    """Validate ``data`` (the parsed ``manifest.json``) and return the manifest.

    ``uri`` names the manifest in error messages. ``expect_model`` / ``expect_revision``, when
    given (the drop's location ``<model>/<revision>/``), must equal the manifest's own values.
    Every problem is collected; :class:`ManifestError` lists them all.
    """
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        raise ManifestError(uri, [("$", f"is a JSON {_json_type(data)}, not an object",
                                   f"write a JSON object with the fields {', '.join(_DROP_FIELDS)}")])
    for key in data:
        if key not in _DROP_FIELDS:
            problems.append((str(key), "is not a manifest field",
                             f"remove it, or rename it to one of {', '.join(_DROP_FIELDS)}"))
    values: dict[str, str] = {}
    for name in _DROP_FIELDS[:-1]:
        value = data.get(name)
        if name not in data:
            problems.append((name, "is missing", f"add \"{name}\": {_FIELD_HINT[name]}"))
        elif not isinstance(value, str) or not value.strip():
            problems.append((name, f"must be a non-empty string, got {value!r}", f"set it to {_FIELD_HINT[name]}"))
        else:
            values[name] = value
    for name in ("model", "revision"):
        value = values.get(name)
        if value is not None and not _NAME.match(value):
            problems.append((name, f"{value!r} cannot be a path segment",
                             "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"))
    if values.get("model") == QUARANTINE_PREFIX.rstrip("/"):
        problems.append(("model", "'quarantine' is reserved for the drops bucket's quarantine prefix",
                         "choose another model name"))
    for name, expected in (("model", expect_model), ("revision", expect_revision)):
        if expected is not None and name in values and values[name] != expected:
            problems.append((name, f"{values[name]!r} does not match the drop location ({expected!r})",
                             f"set \"{name}\": \"{expected}\" or move the drop to the matching prefix"))
    image = values.get("runtime_image")
    if image is not None and not is_pinned_by_digest(image):
        problems.append(("runtime_image", f"{image!r} is not pinned by digest",
                         "use the image's content digest: repo@sha256:<64 lowercase hex>"))
    created_problem = _timestamp_problem(values["created_at"]) if "created_at" in values else None
    if created_problem:
        problems.append(("created_at", created_problem, _FIELD_HINT["created_at"]))
    files = _check_files(data.get("files"), "files" in data, problems)
    if problems:
        raise ManifestError(uri, problems)
    return WeightDropManifest(
        model=values["model"], model_family=values["model_family"], source=values["source"],
        revision=values["revision"], runtime_image=values["runtime_image"], created_at=values["created_at"],
        files=tuple(files), uri=uri,
    )


_FIELD_HINT = {
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
        problems.append(("files", f"must be a list, got a JSON {_json_type(raw)}",
                         "write a list of {\"path\", \"size\", \"sha256\"} objects"))
        return []
    if not raw:
        problems.append(("files", "is empty", "list every file of the drop with its size and sha256"))
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
            problems.append((f"{where}.path", f"{entry.path!r} is listed twice (first at files[{first}])",
                             "list each file once"))
            continue
        first_index[entry.path] = index
        files.append(entry)
    return files


def _check_file(item: Any, where: str, problems: list[Problem]) -> ManifestFile | None:
    if not isinstance(item, Mapping):
        problems.append((where, f"is a JSON {_json_type(item)}, not an object",
                         "write {\"path\": ..., \"size\": ..., \"sha256\": ...}"))
        return None
    before = len(problems)
    for key in item:
        if key not in _FILE_FIELDS:
            problems.append((f"{where}.{key}", "is not a file field", "keep only path, size and sha256"))
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
        problems.append((f"{where}.size", f"must be an integer >= 0, got {size!r}",
                         "write the size in bytes as a JSON integer (e.g. from `stat -c %s`)"))
    if "sha256" not in item:
        problems.append((f"{where}.sha256", "is missing", "add the file's SHA-256 (from `sha256sum`)"))
    elif not isinstance(digest, str) or not _SHA256.match(digest):
        fix = ("write it in lowercase" if isinstance(digest, str) and _SHA256_ANY_CASE.match(digest)
               else "write the 64 lowercase hex characters that `sha256sum` prints")
        problems.append((f"{where}.sha256", f"{digest!r} is not a SHA-256 hex digest", fix))
    if len(problems) > before:
        return None
    return ManifestFile(path=path, size=size, sha256=digest)


def path_problem(path: Any) -> tuple[str, str] | None:
    """Why ``path`` cannot name a file of a drop, with the fix; ``None`` when it can.

    A drop path is relative POSIX (``a/b.safetensors``): no leading ``/``, no ``.``/``..``
    or empty segments, no backslash or control character, and not a reserved root name.
    """
    if not isinstance(path, str) or not path:
        return f"must be a non-empty string, got {path!r}", "write the path relative to the drop root"
    fix = "write it relative to the drop root, e.g. \"model-00001-of-00002.safetensors\" or \"sub/file.bin\""
    if path.startswith("/"):
        return f"{path!r} is absolute", fix
    if "\\" in path or _CONTROL.search(path):
        return f"{path!r} contains a backslash or a control character", "use '/' between folders and printable names"
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return f"{path!r} has an empty, '.' or '..' segment", fix
    if len(path.encode()) > _MAX_PATH:
        return f"is {len(path.encode())} bytes long (at most {_MAX_PATH})", "shorten the path"
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


# ---------------------------------------------------------------------------------------------
# Tokenizer and chat-template hashes


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
"""Files :func:`tokenizer_hash` covers; the first two are required."""


def tokenizer_hash(files: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) of the tokenizer's canonical content, chat template excluded.

    ``files`` maps file names to their bytes; ``tokenizer.json`` and ``tokenizer_config.json``
    are required, ``special_tokens_map.json`` is included when present, other names are
    ignored. Each file is parsed as JSON; ``chat_template`` is removed from
    ``tokenizer_config.json`` (it has its own hash, :func:`chat_template_hash`). The hash is over
    ``{name: parsed}`` dumped as sorted, compact JSON (UTF-8), so whitespace and key order do not
    change it, while any change of vocabulary, merges, normalizer, special tokens or lengths does.
    """
    missing = [name for name in TOKENIZER_FILES[:2] if name not in files]
    if missing:
        raise ValueError(f"tokenizer_hash: {', '.join(missing)} missing from the given files "
                         f"({', '.join(sorted(files)) or 'none'}); fix: pass the checkpoint's tokenizer files "
                         f"(a slow-only tokenizer must be converted to tokenizer.json first)")
    parsed: dict[str, Any] = {}
    for name in TOKENIZER_FILES:
        if name not in files:
            continue
        try:
            parsed[name] = json.loads(files[name])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"tokenizer_hash: {name} is not valid JSON ({exc}); fix: re-export the tokenizer") from exc
    config = parsed["tokenizer_config.json"]
    if not isinstance(config, dict):
        raise ValueError("tokenizer_hash: tokenizer_config.json is not a JSON object; fix: re-export the tokenizer")
    parsed["tokenizer_config.json"] = {k: v for k, v in config.items() if k != "chat_template"}
    return _canonical_hash(parsed)


def chat_template_hash(tokenizer_config_json: Mapping[str, Any], chat_template_file: str | None = None) -> str:
    """SHA-256 (hex) of the chat template a server will apply.

    The template is ``chat_template_file`` (the text of a separate ``chat_template.jinja``)
    when given, else ``tokenizer_config_json["chat_template"]``. A string template hashes as
    its UTF-8 bytes, exactly (whitespace in a template changes the prompt); a list of named
    templates (``[{"name", "template"}]``) as the sorted, compact JSON of ``{name: template}``.
    No template at all hashes as the empty string (SHA-256 of no bytes).
    """
    template: Any = chat_template_file if chat_template_file is not None else tokenizer_config_json.get("chat_template")
    if template is None:
        return hashlib.sha256(b"").hexdigest()
    if isinstance(template, str):
        return hashlib.sha256(template.encode()).hexdigest()
    if isinstance(template, list) and all(isinstance(t, Mapping) and "name" in t and "template" in t for t in template):
        return _canonical_hash({str(t["name"]): t["template"] for t in template})
    raise ValueError(f"chat_template_hash: chat_template is a {_json_type(template)}; fix: use a string or a list "
                     f"of {{\"name\", \"template\"}} objects")


def _canonical_hash(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Deployment manifest


@dataclass(frozen=True)
class DeploymentManifest:
    """Everything a served model version is pinned to.

    ``hardware_configs`` maps each hardware class the version is qualified on to the
    :attr:`llmops.core.hardware.HardwareClass.config_hash` of its config. ``model_version`` is the
    MLflow model version, ``None`` until the version is registered (see :meth:`with_version`).
    """

    model_name: str
    weight_digest: str
    weights_uri: str
    runtime_image: str
    runtime_version: str
    hardware_configs: dict[str, str]
    tokenizer_hash: str
    chat_template_hash: str
    created_at: str
    model_version: str | None = None
    source_drop: str | None = None
    schema_version: int = DEPLOYMENT_SCHEMA_VERSION

    def __post_init__(self) -> None:
        problems = _deployment_problems({name: getattr(self, name) for name in _DEPLOYMENT_FIELDS})
        if problems:
            raise ManifestError(f"deployment manifest of {self.model_name!r}", problems)

    @property
    def runtime_image_digest(self) -> str:
        """The ``sha256:<hex>`` content digest of the runtime image."""
        return self.runtime_image.rsplit("@", 1)[1]

    def with_version(self, model_version: str | int) -> DeploymentManifest:
        """A copy naming the registered MLflow model version."""
        return replace(self, model_version=str(model_version))

    def pins(self) -> dict[str, str]:
        """The pins as flat string pairs (MLflow tags): one per pinned value and hardware class."""
        pins = {
            "weight_digest": self.weight_digest, "weights_uri": self.weights_uri,
            "runtime_image": self.runtime_image, "runtime_image_digest": self.runtime_image_digest,
            "runtime_version": self.runtime_version, "tokenizer_hash": self.tokenizer_hash,
            "chat_template_hash": self.chat_template_hash,
        }
        pins.update({f"hardware_config.{name}": digest for name, digest in sorted(self.hardware_configs.items())})
        return pins

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data; :meth:`from_dict` reads it back."""
        return {
            "schema_version": self.schema_version, "model_name": self.model_name, "model_version": self.model_version,
            "weight_digest": self.weight_digest, "weights_uri": self.weights_uri,
            "runtime_image": self.runtime_image, "runtime_version": self.runtime_version,
            "hardware_configs": dict(sorted(self.hardware_configs.items())),
            "tokenizer_hash": self.tokenizer_hash, "chat_template_hash": self.chat_template_hash,
            "created_at": self.created_at, "source_drop": self.source_drop,
        }

    @classmethod
    def from_dict(cls, data: Any, uri: str = "<deployment manifest>") -> DeploymentManifest:
        """Validate ``data`` (as written by :meth:`to_dict`); errors name ``uri``, the field and the fix."""
        if not isinstance(data, Mapping):
            raise ManifestError(uri, [("$", f"is a JSON {_json_type(data)}, not an object",
                                       "write the object DeploymentManifest.to_dict() returns")])
        problems = _deployment_problems(data)
        if problems:
            raise ManifestError(uri, problems)
        return cls(**{name: (dict(data[name]) if name == "hardware_configs" else data.get(name))
                      for name in _DEPLOYMENT_FIELDS if name in data})


_DEPLOYMENT_REQUIRED = ("model_name", "weight_digest", "weights_uri", "runtime_image", "runtime_version",
                        "hardware_configs", "tokenizer_hash", "chat_template_hash", "created_at")
_DEPLOYMENT_FIELDS = (*_DEPLOYMENT_REQUIRED, "model_version", "source_drop", "schema_version")


def _deployment_problems(data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for key in data:
        if key not in _DEPLOYMENT_FIELDS:
            problems.append((str(key), "is not a deployment-manifest field", "remove it"))
    for name in _DEPLOYMENT_REQUIRED:
        if data.get(name) in (None, ""):
            problems.append((name, "is missing", f"set {name}"))
    for name in ("weight_digest", "tokenizer_hash", "chat_template_hash"):
        value = data.get(name)
        if value not in (None, "") and (not isinstance(value, str) or not _SHA256.match(value)):
            problems.append((name, f"{value!r} is not a SHA-256 hex digest", "use 64 lowercase hex characters"))
    for name in ("model_name", "weights_uri", "runtime_version", "created_at"):
        value = data.get(name)
        if value not in (None, "") and not isinstance(value, str):
            problems.append((name, f"must be a string, got {value!r}", f"set {name} to a string"))
    if isinstance(data.get("model_name"), str) and data["model_name"] and not _NAME.match(data["model_name"]):
        problems.append(("model_name", f"{data['model_name']!r} is not a model name",
                         "use 1-128 letters, digits, '.', '_' or '-'"))
    image = data.get("runtime_image")
    if image not in (None, "") and (not isinstance(image, str) or not is_pinned_by_digest(image)):
        problems.append(("runtime_image", f"{image!r} is not pinned by digest", "use repo@sha256:<64 lowercase hex>"))
    configs = data.get("hardware_configs")
    if configs not in (None, ""):
        if not isinstance(configs, Mapping) or not configs:
            problems.append(("hardware_configs", f"must be a non-empty object, got {configs!r}",
                             "map each hardware class name to its config hash"))
        else:
            for name, digest in configs.items():
                if not isinstance(digest, str) or not _SHA256.match(digest):
                    problems.append((f"hardware_configs.{name}", f"{digest!r} is not a SHA-256 hex digest",
                                     "use HardwareClass.config_hash"))
    created = data.get("created_at")
    created_problem = _timestamp_problem(created) if isinstance(created, str) and created else None
    if created_problem:
        problems.append(("created_at", created_problem, _FIELD_HINT["created_at"]))
    version = data.get("model_version")
    if version is not None and (not isinstance(version, str) or not version):
        problems.append(("model_version", f"must be a non-empty string or null, got {version!r}",
                         "use the MLflow model version as a string, e.g. \"3\""))
    if data.get("schema_version", DEPLOYMENT_SCHEMA_VERSION) != DEPLOYMENT_SCHEMA_VERSION:
        problems.append(("schema_version", f"{data.get('schema_version')!r} is not supported",
                         f"write schema_version {DEPLOYMENT_SCHEMA_VERSION}"))
    source = data.get("source_drop")
    if source is not None and not isinstance(source, str):
        problems.append(("source_drop", f"must be a string or null, got {source!r}", "use the drop's s3:// URI"))
    return problems


def _timestamp_problem(value: str) -> str | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not an ISO-8601 time"
    if parsed.tzinfo is None:
        return f"{value!r} has no time zone"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
