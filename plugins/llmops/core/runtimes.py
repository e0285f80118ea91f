"""The serving runtimes a model version may be pinned to: ``include/runtimes.yaml``, an allowlist.

A runtime is a vLLM image by digest plus what it was qualified with: the vLLM version, and for a
GPU runtime the CUDA version and the minimum NVIDIA driver. A drop pinned to an image that is not
listed is refused at receive (the fix names this file); a listed runtime whose re-qualification
failed is refused the same way (its verdict lives in the models bucket, see
:func:`verdict_key`). Adding an entry is a change of its own: the ``runtime_requalify`` DAG
re-qualifies the champion on it, paired against the same weights on the runtime it is pinned to.

The embedded default's local runtimes (``llmops.local/vllm-cpu@sha256:...``, named by the digest
of what builds them) are listed under the same rule.

Pure: the standard library and the shared strict loaders of :mod:`llmops.core.fields`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.config.images import is_pinned_by_digest
from llmops.core.fields import (
    DocumentError,
    load_yaml_file,
    require_list,
    require_mapping,
    require_str,
    unknown_keys,
)
from llmops.core.limits import KIB

RUNTIMES_FILE_MAX_BYTES = 256 * KIB
RUNTIMES_SCHEMA_VERSION = 1
ACCELERATORS = ("cpu", "cuda", "rocm")
_ENTRY_KEYS = frozenset({"image", "vllm_version", "accelerator", "cuda", "driver", "notes"})
_FIX = "see the comment at the top of include/runtimes.yaml for the format"


class RuntimeNotAllowed(ValueError):
    """A pinned runtime image that may not serve; the message names the allowlist and the fix."""


@dataclass(frozen=True)
class Runtime:
    """One allowed serving runtime."""

    image: str
    vllm_version: str
    accelerator: str
    cuda: str | None = None
    driver: str | None = None
    notes: str = ""

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the image."""
        return self.image.rsplit("@", 1)[1]

    @property
    def identity(self) -> str:
        """A short hash of everything the runtime was qualified with (image, vLLM, CUDA, driver).

        A driver or CUDA bump under the same image is a new identity: a new runtime to qualify.
        """
        canonical = json.dumps({"image": self.image, "vllm_version": self.vllm_version, "cuda": self.cuda,
                                "driver": self.driver}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def tags(self) -> dict[str, str]:
        """MLflow tags naming this runtime (eval runs carry them: two runs say what differed)."""
        return {"runtime_image": self.image, "runtime_image_digest": self.digest,
                "runtime_vllm_version": self.vllm_version, "runtime_accelerator": self.accelerator,
                "runtime_cuda": self.cuda or "none", "runtime_driver": self.driver or "none",
                "runtime_identity": self.identity}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"image": self.image, "vllm_version": self.vllm_version, "accelerator": self.accelerator,
                "cuda": self.cuda, "driver": self.driver, "notes": self.notes, "identity": self.identity}


@dataclass(frozen=True)
class RuntimeAllowlist:
    """The parsed ``include/runtimes.yaml``."""

    source: str
    runtimes: tuple[Runtime, ...]

    def find(self, image: str) -> Runtime | None:
        """The entry for ``image`` (exact reference, digest included), or ``None``."""
        return next((runtime for runtime in self.runtimes if runtime.image == image), None)

    def require(self, image: str, *, rejected: Mapping[str, Any] | None = None) -> Runtime:
        """The entry for ``image``; :class:`RuntimeNotAllowed` when it is not listed, or when
        ``rejected`` (the runtime's failed re-qualification verdict) is given."""
        runtime = self.find(image)
        if runtime is None:
            listed = ", ".join(r.image for r in self.runtimes) or "none"
            reason = ("is not pinned by digest (repo@sha256:<64 hex>)" if not is_pinned_by_digest(image)
                      else "is not on the runtime allowlist")
            raise RuntimeNotAllowed(
                f"runtime_image {image!r} {reason} ({self.source}); fix: republish the drop pinned to an "
                f"allowed runtime ({listed}), or qualify the new runtime first: add it to {self.source} "
                f"(image by digest, vllm_version, accelerator, cuda, driver) and run the runtime_requalify DAG")
        if rejected is not None:
            changed = ", ".join(rejected.get("changed_categories") or []) or "see the verdict"
            raise RuntimeNotAllowed(
                f"runtime_image {image!r} failed its re-qualification (categories that changed: {changed}; "
                f"verdict run {rejected.get('mlflow_run_id')}); fix: pin the drop to the runtime the champion "
                f"serves on, or fix the runtime and qualify a new digest")
        return runtime


def load_runtimes(path: str | Path) -> RuntimeAllowlist:
    """Load and validate the allowlist at ``path``; raise :class:`~llmops.core.fields.DocumentError`
    (naming the file, the field and the fix) for anything malformed."""
    source = str(path)
    if not Path(path).is_file():
        raise DocumentError(source, "(file)", "does not exist",
                            "create include/runtimes.yaml (or point LLMOPS_RUNTIMES_FILE at the allowlist)")
    data = load_yaml_file(path, RUNTIMES_FILE_MAX_BYTES, limit_name="RUNTIMES_FILE_MAX_BYTES")
    top = require_mapping(data, source, "(file)", "write `schema_version: 1` and `runtimes:` as top-level keys")
    unknown_keys(top, ("schema_version", "runtimes"), source)
    if top.get("schema_version") != RUNTIMES_SCHEMA_VERSION:
        raise DocumentError(source, "schema_version", f"expected {RUNTIMES_SCHEMA_VERSION}, got "
                            f"{top.get('schema_version')!r}", f"set `schema_version: {RUNTIMES_SCHEMA_VERSION}`")
    entries = require_list(top.get("runtimes"), source, "runtimes", "list the allowed runtimes under `runtimes:`")
    runtimes: list[Runtime] = []
    seen: set[str] = set()
    for i, raw in enumerate(entries):
        runtime = _entry(raw, source, f"runtimes[{i}]")
        if runtime.image in seen:
            raise DocumentError(source, f"runtimes[{i}].image", f"{runtime.image!r} is listed twice",
                                "keep one entry per image")
        seen.add(runtime.image)
        runtimes.append(runtime)
    return RuntimeAllowlist(source=source, runtimes=tuple(runtimes))


def _entry(raw: Any, source: str, where: str) -> Runtime:
    entry = require_mapping(raw, source, where, "each runtime is a mapping with image, vllm_version, accelerator")
    unknown_keys(entry, _ENTRY_KEYS, source, where)
    image = require_str(entry.get("image"), source, f"{where}.image", "name the image by digest: repo@sha256:<64 hex>")
    if not is_pinned_by_digest(image):
        raise DocumentError(source, f"{where}.image", f"{image!r} is not pinned by digest",
                            "use repo@sha256:<64 lowercase hex> (`docker buildx imagetools inspect` prints it)")
    version = require_str(entry.get("vllm_version"), source, f"{where}.vllm_version",
                          "the vLLM version inside the image, e.g. 0.32.0")
    accelerator = require_str(entry.get("accelerator"), source, f"{where}.accelerator", f"one of {ACCELERATORS}")
    if accelerator not in ACCELERATORS:
        raise DocumentError(source, f"{where}.accelerator", f"{accelerator!r} is not known", f"one of {ACCELERATORS}")
    cuda = _optional_str(entry, "cuda", source, where)
    driver = _optional_str(entry, "driver", source, where)
    if accelerator == "cuda" and (cuda is None or driver is None):
        raise DocumentError(source, f"{where}.{'cuda' if cuda is None else 'driver'}", "required for a CUDA runtime",
                            "name the CUDA version and the minimum NVIDIA driver the runtime was qualified with")
    notes = _optional_str(entry, "notes", source, where) or ""
    return Runtime(image=image, vllm_version=version, accelerator=accelerator, cuda=cuda, driver=driver, notes=notes)


def _optional_str(entry: Mapping[str, Any], key: str, source: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    return require_str(value, source, f"{where}.{key}", f"a string (quote numbers: {key}: \"12.8\"), or leave it out")


def verdict_key(runtime: Runtime) -> str:
    """Where a runtime's re-qualification verdict lives in the models bucket:
    ``runtimes/<image hex>/<identity>/verdict.json`` (a driver bump is a new identity, a new verdict)."""
    return f"runtimes/{runtime.digest.removeprefix('sha256:')}/{runtime.identity}/verdict.json"
