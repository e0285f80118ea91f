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
