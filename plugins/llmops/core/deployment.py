"""What a deployment pins: the deployment manifest, and the tokenizer and chat-template hashes.

The **deployment manifest** (:class:`DeploymentManifest`) pins everything a served model
depends on: weight digest, runtime image digest and version, hardware-class config hashes,
tokenizer and chat-template hashes. Pure: only the standard library and the shared manifest
rules of :mod:`llmops.core.manifests`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from llmops.config.images import is_pinned_by_digest
from llmops.core.fields import short_repr
from llmops.core.manifests import (
    FIELD_HINTS,
    NAME_RE,
    SHA256_RE,
    ManifestError,
    Problem,
    json_document,
    json_type,
    timestamp_problem,
)

DEPLOYMENT_SCHEMA_VERSION = 1


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
    raise ValueError(f"chat_template_hash: chat_template is a {json_type(template)}; fix: use a string or a list "
                     f"of {{\"name\", \"template\"}} objects")


def _canonical_hash(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    def from_json(cls, body: bytes, uri: str) -> DeploymentManifest:
        """Validate the raw bytes of a deployment manifest (at most
        :data:`~llmops.core.limits.MANIFEST_MAX_BYTES`, strict JSON); errors are :class:`ManifestError`."""
        data = json_document(body, uri, "the deployment manifest",
                             "write the object DeploymentManifest.to_dict() returns")
        return cls.from_dict(data, uri)

    @classmethod
    def from_dict(cls, data: Any, uri: str = "<deployment manifest>") -> DeploymentManifest:
        """Validate ``data`` (as written by :meth:`to_dict`); errors name ``uri``, the field and the fix."""
        if not isinstance(data, Mapping):
            raise ManifestError(uri, [("$", f"is a JSON {json_type(data)}, not an object",
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
            problems.append((str(key)[:100], "is not a deployment-manifest field",
                             f"remove it, or use one of {', '.join(_DEPLOYMENT_FIELDS)}"))
    for name in _DEPLOYMENT_REQUIRED:
        if _blank(data.get(name)):
            problems.append((name, "is missing", f"set {name}"))
    for name in ("weight_digest", "tokenizer_hash", "chat_template_hash"):
        value = data.get(name)
        if not _blank(value) and (not isinstance(value, str) or not SHA256_RE.match(value)):
            problems.append((name, f"{short_repr(value)} is not a SHA-256 hex digest",
                             "use 64 lowercase hex characters"))
    for name in ("model_name", "weights_uri", "runtime_version", "created_at"):
        value = data.get(name)
        if not _blank(value) and not isinstance(value, str):
            problems.append((name, f"must be a string, got a JSON {json_type(value)} {short_repr(value)}",
                             f"set {name} to a string"))
    if isinstance(data.get("model_name"), str) and data["model_name"] and not NAME_RE.match(data["model_name"]):
        problems.append(("model_name", f"{short_repr(data['model_name'])} is not a model name",
                         "use 1-128 letters, digits, '.', '_' or '-'"))
    image = data.get("runtime_image")
    if not _blank(image) and (not isinstance(image, str) or not is_pinned_by_digest(image)):
        problems.append(("runtime_image", f"{short_repr(image)} is not pinned by digest",
                         "use repo@sha256:<64 lowercase hex>"))
    configs = data.get("hardware_configs")
    if not _blank(configs):
        if not isinstance(configs, Mapping) or not configs:
            problems.append(("hardware_configs", f"must be a non-empty object, got {short_repr(configs)}",
                             "map each hardware class name to its config hash"))
        else:
            for name, digest in configs.items():
                if not isinstance(digest, str) or not SHA256_RE.match(digest):
                    problems.append((f"hardware_configs.{str(name)[:100]}",
                                     f"{short_repr(digest)} is not a SHA-256 hex digest",
                                     "use HardwareClass.config_hash"))
    created = data.get("created_at")
    created_problem = timestamp_problem(created) if isinstance(created, str) and created else None
    if created_problem:
        problems.append(("created_at", created_problem, FIELD_HINTS["created_at"]))
    version = data.get("model_version")
    if version is not None and (not isinstance(version, str) or not version):
        problems.append(("model_version", f"must be a non-empty string or null, got {short_repr(version)}",
                         "use the MLflow model version as a string, e.g. \"3\""))
    schema = data.get("schema_version", DEPLOYMENT_SCHEMA_VERSION)
    if type(schema) is not int or schema != DEPLOYMENT_SCHEMA_VERSION:  # true == 1 and 1.0 == 1 in Python
        problems.append(("schema_version", f"{short_repr(schema)} is not supported",
                         f"write schema_version {DEPLOYMENT_SCHEMA_VERSION}"))
    source = data.get("source_drop")
    if source is not None and not isinstance(source, str):
        problems.append(("source_drop", f"must be a string or null, got {short_repr(source)}",
                         "use the drop's s3:// URI"))
    return problems


def _blank(value: Any) -> bool:
    """``None`` or the empty string: a field left unset."""
    return value is None or (isinstance(value, str) and value == "")
