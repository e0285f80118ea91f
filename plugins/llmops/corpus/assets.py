"""Airflow Assets of the corpus pipeline (cheap to import: DAG files use them at parse time).

- :data:`CORPUS_ASSET`: the live corpus pointer; an event is emitted after every publish that
  changed it, so an eval run (e.g. ``weekly_eval_drift``) can follow every corpus change.
- :data:`PARSER_CONFIG_ASSET`: the active parser configuration; ``corpus_parser_watch`` emits
  an event when it differs from the live snapshot's, and ``corpus_reingest`` runs on it.
"""

from __future__ import annotations

from airflow.sdk import Asset

CORPUS_NAME = "main"
CORPUS_ASSET = Asset(name="llmops-corpus-main", uri="s3://llmops-corpus/corpus/main/current.json",
                     group="corpus")
PARSER_CONFIG_ASSET = Asset(name="llmops-corpus-parser-config", uri="file:///include/corpus/parsers/active",
                            group="corpus")
PARSER_VERSION_VARIABLE = "llmops_corpus_parser_version"


def parser_version_to_announce(active: str, live: str | None, last_announced: str | None) -> str | None:
    """The parser version ``corpus_parser_watch`` should announce, or ``None``.

    ``last_announced`` is read from the parser-config asset's own latest event, not from a
    separate record: an announcement exists exactly when its event does, so a watcher that
    fails between deciding and emitting announces again on its next run (never zero times),
    and one that emitted never announces the same version twice.
    """
    return active if active != live and active != last_announced else None
