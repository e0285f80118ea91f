"""Eval-set hygiene: schema checks with Great Expectations before an eval set is used.

Every line of an eval set's JSONL file becomes a row; a Great Expectations suite checks:

* **schema** (errors): columns ``id``, ``category``, ``reference``, ``scorer`` exist and are
  not null; each row has a prompt (``messages`` with content, or ``prompt``); ``scorer`` is a
  known scorer; ``category`` is declared in the eval set's YAML;
* **duplicates** (errors): unique ``id``; no duplicate prompts (the same question twice
  weighs its category twice and hides a change);
* **empty references** (errors): ``reference`` is not empty (a blank answer key scores
  every model alike);
* **size** (reported, a warning outside 50-500 items): fewer items make intervals too wide to
  see a drift; more make a weekly run slow. The size and per-category counts are reported.

Then the set is loaded with :func:`llmops.evals.evalset.load_evalset` (chat-message structure).
A failing set is refused with its file, the failing check and the offending lines.
``great_expectations`` and ``pandas`` are imported inside the functions (6 s of imports).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.core.fields import DocumentError, load_yaml_file
from llmops.core.limits import EVALSET_CONFIG_MAX_BYTES, InputTooLargeError
from llmops.evals.evalset import EvalSetError, data_path, file_revision, lines, load_evalset
from llmops.evals.scorers import SCORERS

SIZE_RANGE = (50, 500)
_SHOWN = 5


class EvalSetHygieneError(ValueError):
    """An eval set failed its checks; the message names each file, check and offending lines."""


@dataclass(frozen=True)
class HygieneCheck:
    """One check's outcome: which check, on which column, errors or warning, and what failed."""

    check: str
    column: str | None
    passed: bool
    level: str  # "error" | "warning"
    detail: str = ""

    def describe(self) -> str:
        on = f"({self.column})" if self.column else ""
        return f"{self.check}{on}: {self.detail}" if self.detail else f"{self.check}{on}"


@dataclass(frozen=True)
class HygieneResult:
    """The checks of one eval set and its size, per category."""

    config: Path
    data: Path
    name: str
    revision: str
    items: int
    categories: dict[str, int]
    checks: tuple[HygieneCheck, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> list[HygieneCheck]:
        return [c for c in self.checks if not c.passed and c.level == "error"]

    @property
    def warnings(self) -> list[HygieneCheck]:
        return [c for c in self.checks if not c.passed and c.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def message(self) -> str:
        """What failed, naming the file: one line per failing check."""
        lines = [f"{self.data}: {c.describe()}" for c in self.errors]
        return "\n".join(lines)

    def summary(self, root: Path | None = None) -> dict[str, Any]:
        """A JSON-able summary (the report's eval-set table and the job's result)."""
        config = str(self.config.relative_to(root)) if root and self.config.is_relative_to(root) else str(self.config)
        return {"name": self.name, "config": config, "revision": self.revision, "items": self.items,
                "categories": dict(self.categories), "ok": self.ok,
                "errors": [c.describe() for c in self.errors], "warnings": [c.describe() for c in self.warnings]}


def read_rows(data: Path) -> tuple[list[dict[str, Any]], list[HygieneCheck]]:
    """The JSONL lines as dicts (each with its ``_line``), and an error per line that is not a JSON object.

    Raises :class:`EvalSetError` or ``InputTooLargeError`` for what stops the reading itself
    (a line over the size limit, bytes that are not UTF-8, a file too large).
    """
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    for lineno, line in lines(data):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"line {lineno}: {exc.msg}")
            continue
        if not isinstance(raw, dict):
            bad.append(f"line {lineno}: not a JSON object")
            continue
        rows.append({**raw, "_line": lineno})
    checks = [HygieneCheck("valid_json_lines", None, False, "error", "; ".join(bad[:_SHOWN]))] if bad else []
    return rows, checks


def prompt_text(row: dict[str, Any]) -> str | None:
    """The row's prompt as one string (chat messages joined), or None when it has none."""
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        contents = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
        text = "\n".join(f"{m.get('role', '')}: {c}" for m, c in zip(messages, contents, strict=False))
        return text if any(c.strip() for c in contents) else None
    prompt = row.get("prompt")
    return prompt if isinstance(prompt, str) and prompt.strip() else None


def check_evalset(config_path: Path, *, size_range: tuple[int, int] = SIZE_RANGE) -> HygieneResult:
    """Run the hygiene suite on the eval set described by ``config_path`` (never raises on bad data)."""
    config_path = Path(config_path)
    try:
        config = load_yaml_file(config_path, EVALSET_CONFIG_MAX_BYTES, limit_name="EVALSET_CONFIG_MAX_BYTES") or {}
    except (DocumentError, InputTooLargeError) as exc:
        return _failed(config_path, config_path, "?", "readable_config", f"cannot read the YAML: {exc}")
    if not isinstance(config, dict) or "file" not in config or "name" not in config:
        return _failed(config_path, config_path, "?", "config_fields",
                       "the YAML needs 'name', 'file' and 'categories'; see docs/eval-drift.md")
    if not isinstance(config.get("categories") or {}, dict):
        return _failed(config_path, config_path, str(config["name"]), "config_fields",
                       "'categories' must map each category name to its settings; see docs/eval-drift.md")
    try:
        data = data_path(config["file"], config_path)
    except DocumentError as exc:
        return _failed(config_path, config_path / ".." / str(config["file"]), str(config["name"]), "file_exists",
                       str(exc))
    declared = sorted((config.get("categories") or {}).keys())
    try:
        rows, checks = read_rows(data)
    except (EvalSetError, InputTooLargeError) as exc:  # a line too long, not UTF-8, a file too large
        # nothing else can be checked
        return _failed(config_path, data, str(config["name"]), "valid_json_lines", str(exc))
    categories: dict[str, int] = {}
    for row in rows:
        categories[str(row.get("category"))] = categories.get(str(row.get("category")), 0) + 1
    checks += _gx_checks(rows, declared, size_range)
    if not [c for c in checks if not c.passed and c.level == "error"]:
        try:
            load_evalset(config_path)
        except EvalSetError as exc:
            checks.append(HygieneCheck("load_evalset", None, False, "error", str(exc)))
    return HygieneResult(config=config_path, data=data, name=str(config["name"]), revision=file_revision(data),
                         items=len(rows), categories=categories, checks=tuple(checks))


def _failed(config: Path, data: Path, name: str, check: str, detail: str) -> HygieneResult:
    return HygieneResult(config=config, data=data, name=name, revision="", items=0, categories={},
                         checks=(HygieneCheck(check, None, False, "error", detail),))


def _gx_checks(rows: list[dict[str, Any]], declared: list[str], size_range: tuple[int, int]) -> list[HygieneCheck]:
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd

    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame({"_line": []})
    frame["prompt_text"] = [prompt_text(r) for r in rows]
    for column in ("id", "category", "reference", "scorer"):
        if column in frame.columns:
            # Values are compared as text (an int id and its string twin are the same id).
            frame[column] = [None if v is None or (isinstance(v, float) and v != v) else str(v)
                             for v in frame[column]]
    frame["reference_stripped"] = [v.strip() if isinstance(v, str) else v for v in frame.get("reference", [])] \
        if "reference" in frame.columns else None

    suite: list[tuple[Any, str | None, str]] = []
    for column in ("id", "category", "reference", "scorer"):
        suite.append((gxe.ExpectColumnToExist(column=column), column, "error"))
        if column in frame.columns:
            suite.append((gxe.ExpectColumnValuesToNotBeNull(column=column), column, "error"))
    suite.append((gxe.ExpectColumnValuesToNotBeNull(column="prompt_text"), "prompt or messages", "error"))
    if "id" in frame.columns:
        suite.append((gxe.ExpectColumnValuesToBeUnique(column="id"), "id", "error"))
    suite.append((gxe.ExpectColumnValuesToBeUnique(column="prompt_text"), "prompt or messages", "error"))
    if "reference" in frame.columns:
        suite.append((gxe.ExpectColumnValueLengthsToBeBetween(column="reference_stripped", min_value=1),
                      "reference", "error"))
    if "scorer" in frame.columns:
        suite.append((gxe.ExpectColumnValuesToBeInSet(column="scorer", value_set=sorted(SCORERS)), "scorer", "error"))
    if "category" in frame.columns and declared:
        suite.append((gxe.ExpectColumnValuesToBeInSet(column="category", value_set=declared), "category", "error"))
    suite.append((gxe.ExpectTableRowCountToBeBetween(min_value=size_range[0], max_value=size_range[1]), None,
                  "warning"))

    context = gx.get_context(mode="ephemeral")
    batch = (context.data_sources.add_pandas("evalsets").add_dataframe_asset("items")
             .add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame}))
    # One validation of the whole suite (GX computes shared metrics once); each expectation
    # carries its index in ``meta`` to find its result again.
    expectation_suite = gx.ExpectationSuite(name="evalset_hygiene")
    for index, (expectation, _, _) in enumerate(suite):
        expectation.meta = {"index": index}
        expectation_suite.add_expectation(expectation)
    by_index = {int(r.expectation_config.meta["index"]): r for r in batch.validate(expectation_suite).results}
    checks = []
    for index, (expectation, column, level) in enumerate(suite):
        result = by_index[index]
        checks.append(HygieneCheck(check=expectation.expectation_type, column=column, passed=bool(result.success),
                                   level=level, detail="" if result.success else
                                   _detail(frame, expectation, column, result.result, size_range)))
    return checks


def _detail(frame: Any, expectation: Any, column: str | None, result: dict[str, Any],
            size_range: tuple[int, int]) -> str:
    kind = expectation.expectation_type
    if kind == "expect_table_row_count_to_be_between":
        return (f"{result.get('observed_value')} items, outside the recommended {size_range[0]}-{size_range[1]} "
                "(fewer: intervals too wide to see drift; more: slow weekly runs)")
    if kind == "expect_column_to_exist":
        return "missing in every line; fix: add it to each JSON object"
    source = getattr(expectation, "column", None)
    count = result.get("unexpected_count")
    examples = [v for v in (result.get("partial_unexpected_list") or [])][:_SHOWN]
    lines: list[int] = []
    if source in frame.columns:
        if kind == "expect_column_values_to_be_unique":
            mask = frame[source].duplicated(keep=False) & frame[source].notna()
        elif kind == "expect_column_values_to_not_be_null":
            mask = frame[source].isna()
        elif kind == "expect_column_value_lengths_to_be_between":
            mask = frame[source].map(lambda v: isinstance(v, str) and len(v) == 0)
        else:
            value_set = set(getattr(expectation, "value_set", []) or [])
            mask = frame[source].map(lambda v: v is not None and v not in value_set)
        lines = [int(n) for n in frame.loc[mask, "_line"].tolist()][:_SHOWN]
    what = {"expect_column_values_to_be_unique": "duplicates",
            "expect_column_values_to_not_be_null": "missing values",
            "expect_column_value_lengths_to_be_between": "empty values",
            "expect_column_values_to_be_in_set": "values not allowed"}.get(kind, "unexpected values")
    allowed = f" (allowed: {sorted(expectation.value_set)})" if kind == "expect_column_values_to_be_in_set" else ""
    return f"{count} {what}{allowed} at lines {lines}, e.g. {examples}"


def check_evalsets(config_paths: list[Path], *, size_range: tuple[int, int] = SIZE_RANGE) -> list[HygieneResult]:
    """Check several eval sets (each independently)."""
    return [check_evalset(p, size_range=size_range) for p in config_paths]


def require_clean(results: list[HygieneResult]) -> None:
    """Raise :class:`EvalSetHygieneError` naming every failing file and check."""
    failing = [r for r in results if not r.ok]
    if failing:
        raise EvalSetHygieneError("eval set hygiene failed; fix these lines before the run can use the set:\n"
                                  + "\n".join(r.message() for r in failing))
