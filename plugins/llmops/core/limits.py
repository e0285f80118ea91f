"""Size limits of user input, named once, and the one check that enforces them.

Everything a user (or another system) hands the platform is bounded before it is parsed: a
config file, an eval-set line, a drop manifest, a lease object, the extra vLLM flags of a
canary. A reader checks the declared size first (``os.fstat``, S3 ``ContentLength``) and then
reads at most ``limit + 1`` bytes (:func:`read_at_most`), so an oversized object is refused
without being loaded into memory. The error names the input, the limit (value and constant)
and the fix.

Only the standard library: DAG files and pod jobs import this.
"""

from __future__ import annotations

from typing import Any, Protocol

KIB = 1024
MIB = 1024 * KIB

HARDWARE_CONFIG_MAX_BYTES = 256 * KIB
"""A hardware-class YAML (``include/hardware_configs/<name>.yaml``)."""
BENCHMARK_MATRIX_MAX_BYTES = 256 * KIB
"""A workload matrix YAML (``include/benchmarks/<class>.yaml``)."""
BENCHMARK_MAX_WORKLOADS = 500
"""Workloads one matrix may expand to (each is a ``vllm bench serve`` run of minutes)."""
CORPUS_CONFIG_MAX_BYTES = 1 * MIB
"""A corpus configuration file (taxonomy, parser configuration, expectation suite)."""
EVALSET_CONFIG_MAX_BYTES = 256 * KIB
"""An eval set's YAML description."""
EVALSET_LINE_MAX_BYTES = 64 * KIB
"""One line (one item) of an eval set's JSONL file."""
EVALSET_MAX_ITEMS = 20_000
"""Items in one eval set (a weekly run scores each of them against a model)."""
EVALSET_FILE_MAX_BYTES = 64 * MIB
"""An eval set's whole JSONL file (blank lines included)."""
MANIFEST_MAX_BYTES = 4 * MIB
"""A weight-drop manifest (``manifest.json``) or a deployment manifest."""
MANIFEST_MAX_FILES = 10_000
"""Files one weight drop may list."""
LEASE_MAX_BYTES = 64 * KIB
"""A lease or claim object (a few hundred bytes when written by the platform)."""
VLLM_EXTRA_ARGS_MAX = 64
"""Extra ``vllm serve`` tokens a user may pass (``canary_vllm_args``, ``vllm_overrides``)."""
VLLM_EXTRA_ARG_MAX_CHARS = 1024
"""Characters in one extra ``vllm serve`` token."""

DOCUMENT_MAX_DEPTH = 32
"""Nesting depth of a parsed YAML/JSON document (no config of the platform nests deeper than 6)."""
DOCUMENT_MAX_NODES = 200_000
"""Values in a parsed document, aliases counted at each use (stops a "billion laughs" YAML)."""
MAX_REPORTED_PROBLEMS = 50
"""Problems an error message lists before it says how many more there are."""


class InputTooLargeError(ValueError):
    """An input over its size limit; the message names the input, the limit and the fix.

    ``field`` (= ``what``), ``problem`` and ``fix`` are also attributes, so a loader can re-raise
    it as its own error type.
    """

    def __init__(self, source: str, what: str, size: int, limit: int, fix: str, limit_name: str = "",
                 unit: str = "bytes") -> None:
        self.source, self.what, self.size, self.limit = str(source), what, size, limit
        named = f" ({limit_name})" if limit_name else ""
        self.field = what
        self.problem = f"is {describe(size, unit)}, over the limit of {describe(limit, unit)}{named}"
        self.fix = fix
        super().__init__(f"{self.source}: {what} {self.problem}; fix: {fix}")


def describe(size: int, unit: str = "bytes") -> str:
    """``65536`` -> ``'65536 bytes (64 KiB)'``; ``(12, "items")`` -> ``'12 items'``."""
    if unit == "bytes" and size >= MIB and size % MIB == 0:
        return f"{size} bytes ({size // MIB} MiB)"
    if unit == "bytes" and size >= KIB and size % KIB == 0:
        return f"{size} bytes ({size // KIB} KiB)"
    return f"{size} {unit}"


def check_size(source: str, what: str, size: int, limit: int, fix: str, *, name: str = "",
               unit: str = "bytes") -> None:
    """Raise :class:`InputTooLargeError` when ``size`` is over ``limit``.

    ``source`` names the file or URI, ``what`` the measured thing (``"line 12"``, ``"the object"``,
    ``"files"``), ``fix`` what the user does about it, ``name`` the limit's constant (shown) and
    ``unit`` what is counted (``"bytes"``, ``"files"``, ``"items"``).
    """
    if size > limit:
        raise InputTooLargeError(source, what, size, limit, fix, f"llmops.core.limits.{name}" if name else "", unit)


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def read_at_most(stream: _Readable | Any, source: str, what: str, limit: int, fix: str, *,
                 declared_size: int | None = None, name: str = "") -> bytes:
    """The whole content of ``stream``, refused when it is over ``limit`` bytes.

    ``declared_size`` (``os.fstat``, S3 ``ContentLength``) is checked first; then at most
    ``limit + 1`` bytes are read, so a stream that lies about its size is still bounded.
    """
    if declared_size is not None:
        check_size(source, what, int(declared_size), limit, fix, name=name)
    chunks: list[bytes] = []
    remaining = limit + 1
    while remaining > 0:  # a network stream may return fewer bytes than asked for
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(bytes(chunk))
        remaining -= len(chunk)
    data = b"".join(chunks)
    check_size(source, what, len(data), limit, fix, name=name)
    return data
