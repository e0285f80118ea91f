"""Reading user documents safely, and typed fields with errors that name the source, field and fix.

Every loader of user input (hardware classes, eval sets, workload matrices, corpus configs,
manifests, leases) reads through these helpers, so a hostile document ends in one error type,
:class:`DocumentError` (a ``ValueError``), never in a bare ``UnicodeDecodeError``,
``RecursionError`` or a YAML error without context:

- :func:`read_file` reads at most the limit (checked against ``os.fstat`` first);
- :func:`decode_utf8` names the line of a byte that is not UTF-8 (a leading BOM is dropped);
- :func:`parse_yaml` / :func:`parse_json` refuse duplicate keys (YAML and ``json`` keep the last
  one silently), ``NaN``/``Infinity`` in JSON, non-string keys, documents nested deeper than
  :data:`~llmops.core.limits.DOCUMENT_MAX_DEPTH` and documents with more than
  :data:`~llmops.core.limits.DOCUMENT_MAX_NODES` values, aliases counted at each use (a
  "billion laughs" YAML is refused after that many steps, not expanded);
- ``require_*`` check one field's type and say ``<source>: <field>: expected <type>, got <x>; fix: ...``.

A loader re-raises :class:`DocumentError` (or
:class:`~llmops.core.limits.InputTooLargeError`; both carry ``field``, ``problem`` and ``fix``) as
its own documented error type. Only the standard library at import time (PyYAML is imported by
:func:`parse_yaml` when called): pod jobs in the vLLM image import this module.
"""

from __future__ import annotations

import functools
import json
import math
import os
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmops.core.limits import DOCUMENT_MAX_DEPTH, DOCUMENT_MAX_NODES, InputTooLargeError, read_at_most


class DocumentError(ValueError):
    """A user document or one of its fields that cannot be used: ``<source>: <field>: <problem>; fix: <fix>``."""

    def __init__(self, source: str | Path, field: str, problem: str, fix: str) -> None:
        self.source, self.field, self.problem, self.fix = str(source), field, problem, fix
        super().__init__(f"{self.source}: {field}: {problem}; fix: {fix}")


INPUT_ERRORS = (DocumentError, InputTooLargeError)
"""What the helpers of this module raise; each has ``field``, ``problem`` and ``fix``."""

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 4
_REPR.maxlevel = 2


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a readable length (a 1 MB string or a deep list stays one line)."""
    return _REPR.repr(value)


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type: null, boolean, number, string, array, object."""
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


def kind(value: Any) -> str:
    """``value`` as a user would name what they wrote: ``a list [1, 2]``, ``a string 'x'``, ``null``."""
    if value is None:
        return "null"
    names = {bool: "true/false", int: "a whole number", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    name = next((n for t, n in names.items() if isinstance(value, t)), f"a {type(value).__name__}")
    return f"{name} {short_repr(value)}"


# --- reading ----------------------------------------------------------------------------------------------------

def read_file(path: str | Path, limit: int, *, limit_name: str = "", what: str = "the file") -> bytes:
    """The bytes of ``path``, at most ``limit`` of them (its size is checked before reading)."""
    fix = "keep the file under the limit (split it, or remove what is not needed)"
    try:
        with open(path, "rb") as handle:
            return read_at_most(handle, str(path), what, limit, fix, declared_size=os.fstat(handle.fileno()).st_size,
                                name=limit_name)
    except IsADirectoryError:
        raise DocumentError(path, "(file)", "is a folder, not a file", "name the file itself") from None
    except FileNotFoundError:
        raise DocumentError(path, "(file)", "does not exist", "check the path (and the name's spelling)") from None
    except OSError as exc:
        raise DocumentError(path, "(file)", f"cannot be read ({exc.strerror or exc})",
                            "check the path and its permissions") from None


def decode_utf8(data: bytes, source: str | Path) -> str:
    """``data`` as text; a leading UTF-8 BOM is dropped, a byte that is not UTF-8 is named by line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DocumentError(source, f"line {line}", f"byte 0x{data[exc.start]:02x} is not UTF-8 text",
                            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None


@functools.cache
def _strict_yaml_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key repeated in one mapping (YAML would keep the last silently)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            if isinstance(node, yaml.MappingNode):
                seen: dict[tuple[str, str], int] = {}
                for key_node, _ in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                        ident = (key_node.tag, key_node.value)
                        if ident in seen:
                            raise yaml.constructor.ConstructorError(
                                None, None, f"key {short_repr(key_node.value)} appears twice in this mapping "
                                            f"(first on line {seen[ident]})", key_node.start_mark)
                        seen[ident] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def parse_yaml(text: str, source: str | Path) -> Any:
    """The YAML document ``text``, strictly: see the module docstring for what is refused."""
    import yaml

    try:
        data = yaml.load(text, Loader=_strict_yaml_loader())  # a SafeLoader subclass
    except RecursionError:
        raise DocumentError(source, "(file)", "is nested too deeply to read",
                            f"flatten it (at most {DOCUMENT_MAX_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        fix = ("remove the repeated key (keep the value you mean)" if "appears twice" in problem
               else "fix the YAML syntax (indentation, quotes, ':' after each key)")
        raise DocumentError(source, where, f"not valid YAML: {problem}", fix) from None
    check_structure(data, source)
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {short_repr(key)} appears twice in one object")
        result[key] = value
    return result


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{short_repr(text)} is out of the range of a number")
    return value


def parse_json(data: bytes | str, source: str | Path) -> Any:
    """The JSON document ``data`` (UTF-8 bytes or text), strictly: see the module docstring."""
    text = decode_utf8(data, source) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    try:
        value = json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_refuse_constant,
                           parse_float=_finite_float)
    except RecursionError:
        raise DocumentError(source, "(file)", "is nested too deeply to read",
                            f"flatten it (at most {DOCUMENT_MAX_DEPTH} levels)") from None
    except json.JSONDecodeError as exc:
        raise DocumentError(source, f"line {exc.lineno} column {exc.colno}", f"not valid JSON: {exc.msg}",
                            "write valid JSON (double-quoted keys and strings, no trailing comma)") from None
    except ValueError as exc:  # a hook's refusal, or an integer with too many digits
        raise DocumentError(source, "(file)", f"not valid JSON: {exc}",
                            "write each key once and finite numbers (no NaN or Infinity)") from None
    check_structure(value, source)
    return value


def load_yaml_file(path: str | Path, limit: int, *, limit_name: str = "") -> Any:
    """Read (at most ``limit`` bytes), decode and parse the YAML file ``path``."""
    return parse_yaml(decode_utf8(read_file(path, limit, limit_name=limit_name), path), path)


def check_structure(value: Any, source: str | Path, *, max_depth: int = DOCUMENT_MAX_DEPTH,
                    max_nodes: int = DOCUMENT_MAX_NODES) -> None:
    """Refuse a document nested deeper than ``max_depth``, with more than ``max_nodes`` values
    (aliases counted at each use) or with a key that is not a string. Iterative: no recursion."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    nodes = 0
    while stack:
        item, depth, path = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise DocumentError(source, "(file)", f"holds more than {max_nodes} values (aliases counted at each use)",
                                "write the values out without alias chains, or split the document")
        if depth > max_depth:
            raise DocumentError(source, path or "(file)", f"is nested more than {max_depth} levels deep",
                                "flatten the structure")
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise DocumentError(source, path or "(top level)", f"key {short_repr(key)} is not a string",
                                        "quote the key (YAML reads 1, true, yes, on, null as other types)")
                stack.append((child, depth + 1, f"{path}.{key}" if path else key))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))


# --- typed fields -----------------------------------------------------------------------------------------------

def require_mapping(value: Any, source: str | Path, field: str, fix: str) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else :class:`DocumentError`."""
    if not isinstance(value, Mapping):
        raise DocumentError(source, field, f"expected a mapping, got {kind(value)}", fix)
    return value


def require_list(value: Any, source: str | Path, field: str, fix: str) -> list[Any]:
    """``value`` when it is a list, else :class:`DocumentError`."""
    if not isinstance(value, list):
        raise DocumentError(source, field, f"expected a list, got {kind(value)}", fix)
    return value


def require_str(value: Any, source: str | Path, field: str, fix: str, *, allow_empty: bool = False) -> str:
    """``value`` when it is a string (non-blank unless ``allow_empty``), else :class:`DocumentError`."""
    if not isinstance(value, str):
        raise DocumentError(source, field, f"expected a string, got {kind(value)}", fix)
    if not allow_empty and not value.strip():
        raise DocumentError(source, field, "is empty", fix)
    return value


def require_number(value: Any, source: str | Path, field: str, fix: str, *, integer: bool = False,
                   minimum: float | None = None, maximum: float | None = None) -> Any:
    """``value`` when it is a finite number (a whole one with ``integer``) within the bounds.

    ``true``/``false`` are not numbers here, nor is a quoted ``"8"``.
    """
    expected = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise DocumentError(source, field, f"expected {expected}, got {kind(value)}", fix)
    if isinstance(value, float) and not math.isfinite(value):
        raise DocumentError(source, field, f"expected a finite number, got {value}", fix)
    if minimum is not None and value < minimum:
        raise DocumentError(source, field, f"{value} is below the minimum {minimum:g}", fix)
    if maximum is not None and value > maximum:
        raise DocumentError(source, field, f"{value} is above the maximum {maximum:g}", fix)
    return value


def require_bool(value: Any, source: str | Path, field: str, fix: str) -> bool:
    """``value`` when it is ``true`` or ``false``, else :class:`DocumentError`."""
    if not isinstance(value, bool):
        raise DocumentError(source, field, f"expected true or false, got {kind(value)}", fix)
    return value


def unknown_keys(data: Mapping[str, Any], allowed: set[str] | frozenset[str] | tuple[str, ...], source: str | Path,
                 where: str = "") -> None:
    """Refuse the first key of ``data`` that is not in ``allowed`` (a typo must not be ignored)."""
    for key in data:
        if key not in allowed:
            field = f"{where}.{key}" if where else str(key)
            raise DocumentError(source, field, "unknown key", f"remove it or use one of {sorted(allowed)}")
