"""Publish a local model folder as a weight drop (what a training pipeline does at its end).

A drop is ``s3://<drops bucket>/<model>/<revision>/<path>`` for every file of the folder, then
``manifest.json`` written **last**: its arrival marks the drop complete, so the sensor never
sees half a drop. The manifest lists every file with its size and SHA-256, the model family,
source, revision and the digest-pinned serving image (see :mod:`llmops.core.manifests`).

The arrival contract, for every publisher: (1) the manifest last; (2) right after it, an
arrival record ``_arrivals/<UTC %Y%m%dT%H%M%S.%fZ>__<model>__<revision>.json``
(:func:`llmops.refresh.drop_watch.arrival_key`), which is how the watcher finds a drop within
one poll without listing the bucket; a drop without one is found by the watcher's periodic
sweep instead (``LLMOPS_DROP_SWEEP_INTERVAL_S``). Model and revision must follow
:mod:`llmops.refresh.drop_names` (the model is the ``model_refresh`` param and part of a run id).

Tests and demos inject faults with :class:`Faults`; the manifest always describes the *true*
folder, so each fault is what receive must catch:

- ``corrupt``: the object has one byte flipped after hashing (same size, other SHA-256);
- ``truncate``: only the first half of the file is uploaded;
- ``omit``: the file is listed but not uploaded;
- ``extra``: an object is uploaded that the manifest does not list.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops.core.manifests import MANIFEST_NAME, ManifestFile, WeightDropManifest, parse_drop_manifest, path_problem
from llmops.io.integrity import hash_file
from llmops.io.s3 import head, s3_uri, write_json
from llmops.refresh.drop_names import drop_name_problem
from llmops.refresh.drop_watch import arrival_key
from llmops.refresh.staging import drop_prefix

log = logging.getLogger(__name__)

EXTRA_CONTENT = b"an object that the manifest does not list\n"
"""Body of an ``extra`` object when the folder has no file of that name."""


class PublishError(ValueError):
    """A drop cannot be published; the message names the file or option and the fix."""


@dataclass(frozen=True)
class Faults:
    """Faults to inject into a published drop (paths relative to the folder)."""

    corrupt: tuple[str, ...] = ()
    truncate: tuple[str, ...] = ()
    omit: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.corrupt or self.truncate or self.omit or self.extra)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-ready data (only the faults that are set)."""
        return {name: list(paths) for name in ("corrupt", "truncate", "omit", "extra")
                if (paths := getattr(self, name))}


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish_drop` wrote."""

    drop_uri: str
    manifest_uri: str
    manifest: WeightDropManifest
    uploaded: tuple[str, ...]
    bytes_uploaded: int
    faults: Faults = field(default_factory=Faults)
    arrival_uri: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the publish job's result)."""
        return {
            "status": "ok", "drop_uri": self.drop_uri, "manifest_uri": self.manifest_uri,
            "model": self.manifest.model, "revision": self.manifest.revision,
            "weight_digest": self.manifest.weight_digest, "runtime_image": self.manifest.runtime_image,
            "files": len(self.manifest.files), "uploaded": list(self.uploaded),
            "bytes_uploaded": self.bytes_uploaded, "faults": self.faults.to_dict(), "arrival_uri": self.arrival_uri,
        }


def model_files(directory: str | Path, exclude: Sequence[str] = ()) -> list[str]:
    """Relative POSIX paths of the regular files under ``directory``, sorted; ``exclude`` globs skipped."""
    root = Path(directory)
    if not root.is_dir():
        raise PublishError(f"{root}: not a folder; fix: pass the model folder (with config.json and the weights)")
    paths = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not any(fnmatch.fnmatchcase(relative, glob) for glob in exclude):
            paths.append(relative)
    if not paths:
        raise PublishError(f"{root}: no files to publish; fix: pass the model folder")
    return paths


def model_family_of(directory: str | Path) -> str | None:
    """``model_type`` from the folder's ``config.json`` (the Hugging Face architecture family), if any."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    family = config.get("model_type") if isinstance(config, dict) else None
    return family if isinstance(family, str) and family else None


def build_manifest(directory: str | Path, files: Sequence[str], *, model: str, revision: str, model_family: str,
                   source: str, runtime_image: str, created_at: str | None = None, bucket: str = "<drops>",
                   workers: int = 4) -> WeightDropManifest:
    """Hash ``files`` (streamed, in parallel) and return the validated manifest of the drop.

    Raises :class:`llmops.core.manifests.ManifestError` naming each field and its fix.
    """
    root = Path(directory)

    def entry(relative: str) -> dict[str, Any]:
        size, sha = hash_file(root / relative)
        return ManifestFile(path=relative, size=size, sha256=sha).to_dict()

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sha256") as pool:
        entries = list(pool.map(entry, files))
    data = {"model": model, "model_family": model_family, "source": source, "revision": revision,
            "runtime_image": runtime_image, "created_at": created_at or datetime.now(UTC).isoformat(timespec="seconds"),
            "files": entries}
    return parse_drop_manifest(data, s3_uri(bucket, drop_prefix(model, revision) + MANIFEST_NAME))


def publish_drop(s3: Any, directory: str | Path, bucket: str, *, model: str, revision: str, runtime_image: str,
                 model_family: str | None = None, source: str | None = None, faults: Faults | None = None,
                 exclude: Sequence[str] = (), workers: int = 4) -> PublishResult:
    """Upload every file of ``directory`` to ``s3://bucket/<model>/<revision>/``, then ``manifest.json`` last.

    ``model_family`` defaults to ``model_type`` of the folder's ``config.json``, ``source`` to the
    folder's ``file://`` URI. A drop is immutable: an existing ``manifest.json`` at the target is
    an error. Raises :class:`PublishError` or :class:`llmops.core.manifests.ManifestError` before
    anything is uploaded when an option or the manifest is wrong.
    """
    check_drop_names(model, revision)
    root = Path(directory).resolve()
    faults = faults or Faults()
    files = model_files(root, exclude)
    family = model_family or model_family_of(root)
    if not family:
        raise PublishError(f"{root}/config.json has no model_type; fix: pass --model-family (e.g. llama)")
    _check_faults(faults, root, files)
    manifest = build_manifest(root, files, model=model, revision=revision, model_family=family,
                              source=source or root.as_uri(), runtime_image=runtime_image, bucket=bucket,
                              workers=workers)
    prefix = drop_prefix(model, revision)
    manifest_key = prefix + MANIFEST_NAME
    if head(s3, bucket, manifest_key) is not None:
        raise PublishError(f"{s3_uri(bucket, manifest_key)} already exists: a published drop is immutable; "
                           f"fix: publish under another --revision")
    transforms: dict[str, Callable[[Path], None] | None] = {}
    for relative in files:
        if relative not in faults.omit:
            transforms[relative] = (_flip_middle_byte if relative in faults.corrupt
                                    else _truncate_half if relative in faults.truncate else None)
    with tempfile.TemporaryDirectory(prefix="publish-") as tmp:

        def upload(relative: str) -> int:
            path = root / relative
            transform = transforms[relative]
            if transform is not None:  # only faulty files go through a scratch copy
                path = Path(tmp) / relative.replace("/", "__")
                shutil.copyfile(root / relative, path)
                transform(path)
            s3.upload_file(str(path), bucket, prefix + relative)
            return path.stat().st_size

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="upload") as pool:
            sizes = list(pool.map(upload, transforms))
    extra_bytes = 0
    for relative in faults.extra:
        if relative not in files:
            s3.put_object(Bucket=bucket, Key=prefix + relative, Body=EXTRA_CONTENT)
            extra_bytes += len(EXTRA_CONTENT)
    listed = manifest if not faults.extra else _without(manifest, faults.extra)
    write_json(s3, bucket, manifest_key, listed.to_dict())
    arrival = write_arrival(s3, bucket, model, revision, manifest_key)
    uploaded = (*transforms, *(r for r in faults.extra if r not in files))
    log.info("published %s: %d objects, manifest last%s", s3_uri(bucket, prefix), len(uploaded),
             f" (faults: {faults.to_dict()})" if faults else "")
    return PublishResult(drop_uri=s3_uri(bucket, prefix), manifest_uri=s3_uri(bucket, manifest_key),
                         manifest=listed, uploaded=uploaded, bytes_uploaded=sum(sizes) + extra_bytes, faults=faults,
                         arrival_uri=s3_uri(bucket, arrival))


def check_drop_names(model: str, revision: str) -> None:
    """Raise :class:`PublishError` naming the segment, the rule and the fix when ``model`` or
    ``revision`` cannot be a drop path segment (:mod:`llmops.refresh.drop_names`)."""
    problem = drop_name_problem(model, revision)
    if problem is not None:
        option = "--model" if problem.segment == "model" else "--revision"
        raise PublishError(f"{option} {problem.value!r}: cannot be the drop's {problem.segment} segment; "
                           f"rule: {problem.rule}; fix: {problem.fix}")


def write_arrival(s3: Any, bucket: str, model: str, revision: str, manifest_key: str,
                  at: datetime | None = None) -> str:
    """Write the drop's arrival record (after its manifest: the arrival contract); return its key."""
    key = arrival_key(model, revision, at or datetime.now(UTC))
    write_json(s3, bucket, key, {"model": model, "revision": revision, "manifest_key": manifest_key,
                                 "manifest_uri": s3_uri(bucket, manifest_key)})
    return key


def _check_faults(faults: Faults, root: Path, files: Sequence[str]) -> None:
    known = set(files)
    problems = []
    for name in ("corrupt", "truncate", "omit"):
        for relative in getattr(faults, name):
            if relative not in known:
                problems.append(f"--{name} {relative}: no such file in the folder; fix: use one of {sorted(known)}")
            elif name != "omit" and (root / relative).stat().st_size == 0:
                problems.append(f"--{name} {relative}: the file is empty, nothing to damage; fix: pick another file")
    seen: dict[str, str] = {}
    for name in ("corrupt", "truncate", "omit", "extra"):
        for relative in getattr(faults, name):
            if relative in seen and seen[relative] != name:
                problems.append(f"--{name} {relative}: also given to --{seen[relative]}; fix: one fault per file")
            seen.setdefault(relative, name)
    for relative in faults.extra:
        problem = path_problem(relative)
        if problem:
            problems.append(f"--extra {relative}: {problem[0]}; fix: {problem[1]}")
    if set(faults.extra) >= known:
        problems.append("--extra lists every file: the manifest would be empty; fix: leave at least one file listed")
    if problems:
        raise PublishError("cannot inject the faults:\n" + "\n".join(f"  - {p}" for p in problems))


def _without(manifest: WeightDropManifest, paths: Sequence[str]) -> WeightDropManifest:
    """The manifest minus ``paths`` (an ``extra`` fault of a file that is in the folder)."""
    data = manifest.to_dict()
    data["files"] = [f for f in data["files"] if f["path"] not in paths]
    return parse_drop_manifest(data, manifest.uri)


def _flip_middle_byte(path: Path) -> None:
    """Flip every bit of the middle byte: same size, different SHA-256."""
    middle = path.stat().st_size // 2
    with open(path, "r+b") as handle:
        handle.seek(middle)
        byte = handle.read(1)
        handle.seek(middle)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _truncate_half(path: Path) -> None:
    """Keep the first half of the file (an interrupted upload)."""
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
