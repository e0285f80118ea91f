"""The one rule for a weight drop's path segments: ``<model>/<revision>/``.

Publishing refuses a drop whose model or revision breaks it; the watcher refuses (loudly, and
on record) a manifest it finds under such a segment. Both import the rule from here, so a name
the publisher accepts is a name the watcher can turn into an Airflow run id and a
``model_refresh`` ``model`` param (whose pattern is :data:`MODEL_PATTERN`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MODEL_PATTERN = "^[a-z0-9][a-z0-9-]{0,62}$"
"""A model name: the registered model in MLflow and the ``model`` Param of ``model_refresh``."""
REVISION_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""A revision name (a git SHA, ``r10``, a date), with no ``..``."""

_MODEL_RE = re.compile(MODEL_PATTERN)
_REVISION_RE = re.compile(REVISION_PATTERN)

RESERVED_MODELS: dict[str, str] = {
    "quarantine": "the drops bucket's quarantine prefix (where receive copies rejected drops)",
}
"""Model names that the pattern allows but the drops bucket uses for itself, with the reason."""

RULES: dict[str, str] = {
    "model": "1-63 lowercase letters, digits or '-', starting with a letter or digit "
             f"(pattern {MODEL_PATTERN}, the model_refresh 'model' param)",
    "revision": "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, no '..' "
                f"(pattern {REVISION_PATTERN})",
}


@dataclass(frozen=True)
class NameProblem:
    """Why a drop path segment is refused: the segment, its value, the rule and the fix."""

    segment: str  # "model" or "revision"
    value: str
    rule: str
    fix: str

    def __str__(self) -> str:
        return f"{self.segment} {self.value!r} breaks the rule: {self.rule}; fix: {self.fix}"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready data."""
        return {"segment": self.segment, "value": self.value, "rule": self.rule, "fix": self.fix}


def model_problem(model: str) -> NameProblem | None:
    """Why ``model`` cannot be a drop's model segment, or ``None`` when it can."""
    if model in RESERVED_MODELS:
        return NameProblem("model", model, f"{model!r} is reserved: {RESERVED_MODELS[model]}",
                           "choose another model name")
    if not _MODEL_RE.match(model):
        return NameProblem("model", model, RULES["model"],
                           f"publish under a conforming name, e.g. {_suggest_model(model)!r}")
    return None


def revision_problem(revision: str) -> NameProblem | None:
    """Why ``revision`` cannot be a drop's revision segment, or ``None`` when it can."""
    if not _REVISION_RE.match(revision) or ".." in revision:
        return NameProblem("revision", revision, RULES["revision"],
                           f"publish under a conforming revision, e.g. {_suggest_revision(revision)!r}")
    return None


def drop_name_problem(model: str, revision: str) -> NameProblem | None:
    """The first problem of the drop ``<model>/<revision>/``, or ``None`` when both segments conform."""
    return model_problem(model) or revision_problem(revision)


def _suggest_model(model: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")[:63].strip("-")
    return name if name and name not in RESERVED_MODELS else "my-model"


def _suggest_revision(revision: str) -> str:
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", revision)).lstrip("._-")[:128]
    return name or "r1"
