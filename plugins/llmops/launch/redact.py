"""Keep secret values out of what a launcher logs, raises and returns.

A pod job's ``secret_env`` reaches its containers, and a program may print a secret, write it
into ``return.json`` or crash with it in its last lines. What a launcher passes on (the task
log, failure messages, the XCom) must show ``***`` in its place.

:class:`Redactor` is pure: a set of secret values and how each is hidden in text and in JSON
data (strings anywhere, dict keys too). It follows the rule of Airflow's secrets masker: a
value shorter than the masker's minimum length (``[logging] min_length_masked_secret``, 5 by
default) is not masked, or a 2-character secret would star every line; nor is ``airflow``.

Besides the raw value a redactor hides two forms a program commonly prints of it: URL-encoded
(as Airflow's ``Connection`` registers a password; a secret in a URL) and JSON-escaped (a
secret holding quotes, backslashes or non-ASCII, printed with ``json.dumps``). Other encodings
(base64, hex) are not recognised: a job must not print its secrets, this is the safety net.

The Airflow glue (:func:`register_with_airflow`, :func:`airflow_redactor`) imports Airflow
lazily: the local runner works without it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

REPLACEMENT = "***"
DEFAULT_MIN_LENGTH = 5
"""Airflow's default ``[logging] min_length_masked_secret``, used when Airflow is not installed."""
_NEVER_MASKED = frozenset({"airflow"})  # the masker's SECRETS_TO_SKIP_MASKING


def secret_forms(value: str) -> tuple[str, ...]:
    """``value`` and the forms of it a program commonly prints: URL-encoded and JSON-escaped."""
    forms = [value, quote(value, safe=""), json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]]
    return tuple(dict.fromkeys(forms))  # unique, in order


def maskable(value: str, min_length: int) -> bool:
    """Whether the secrets masker masks ``value``: long enough, and not a common word it skips."""
    return len(value) >= min_length and value.lower() not in _NEVER_MASKED


@dataclass(frozen=True)
class Redactor:
    """Replaces known secret values by ``***`` in text and in JSON-like data.

    Build one with :meth:`for_secrets`; ``Redactor()`` hides nothing.
    """

    values: frozenset[str] = frozenset()
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.values:
            # Longest first, so a value that contains another is hidden whole.
            alternatives = sorted(self.values, key=len, reverse=True)
            object.__setattr__(self, "_pattern", re.compile("|".join(map(re.escape, alternatives))))

    @classmethod
    def for_secrets(cls, secrets: Iterable[str], *, min_length: int = DEFAULT_MIN_LENGTH) -> Redactor:
        """A redactor for ``secrets`` (and their printed forms) that the masker's rule masks."""
        values = {form for secret in secrets if maskable(secret, min_length)
                  for form in secret_forms(secret) if maskable(form, min_length)}
        return cls(frozenset(values))

    def __or__(self, other: Redactor) -> Redactor:
        return Redactor(self.values | other.values)

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced by ``***``."""
        return self._pattern.sub(REPLACEMENT, value) if self._pattern is not None else value

    def data(self, value: Any) -> Any:
        """JSON-like ``value`` (a parsed ``return.json``) with every string redacted, dict keys too."""
        return redact_data(value, self.text)


def redact_data(value: Any, text: Callable[[str], str]) -> Any:
    """``value`` with ``text`` applied to every string in it: values, list items and dict keys."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {(text(k) if isinstance(k, str) else k): redact_data(v, text) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, text) for v in value]
    return value


def redact_exception(exc: BaseException, text: Callable[[str], str]) -> BaseException:
    """Redact ``exc``'s string arguments in place (its message) and return it."""
    exc.args = tuple(text(a) if isinstance(a, str) else a for a in exc.args)
    return exc


# -- Airflow's secrets masker ------------------------------------------------------------------


def masker_min_length() -> int:
    """The masker's minimum secret length (``[logging] min_length_masked_secret``)."""
    try:
        from airflow.sdk._shared.secrets_masker import _secrets_masker
    except ImportError:  # pragma: no cover - the local runner without Airflow
        return DEFAULT_MIN_LENGTH
    return int(_secrets_masker().min_length_to_mask)


def register_with_airflow(secrets: Iterable[str]) -> None:
    """Register ``secrets`` (and their printed forms) with Airflow's secrets masker.

    In a task this reaches the task supervisor too, which masks the task log it writes.
    """
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - the local runner without Airflow
        return
    for secret in secrets:
        for form in secret_forms(secret):
            mask_secret(form)


def airflow_text_redactor() -> Callable[[str], str]:
    """Redact text against every secret Airflow's masker knows in this process (connection
    passwords, sensitive variables, values registered with ``mask_secret``).

    Values only: unlike the masker's own ``redact`` on a dict, no value is hidden for its key's
    name (``tokens_per_s`` in a benchmark result is not a secret).
    """
    from airflow.sdk._shared.secrets_masker import redact

    def text(value: str) -> str:
        return str(redact(value, replacement=REPLACEMENT))

    return text
