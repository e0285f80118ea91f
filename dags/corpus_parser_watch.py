"""
### Corpus parser-version watcher

Every 30 minutes, compares the active parser configuration (Airflow variable
`llmops_corpus_parser_version`, a file `include/corpus/parsers/<version>.yaml`) with the parser
version of the live corpus snapshot (`corpus/main/current.json`). When they differ, and this
version was not announced yet, it emits an event on the parser-config asset
(`llmops-corpus-parser-config`): `corpus_reingest` is scheduled on it, so a parser upgrade
re-ingests the corpus once, through the schema checks, without anyone remembering to.

"Announced" is the asset's latest event itself (read as an inlet), never a separate flag set
before the event: a run that dies before emitting leaves nothing announced, so the next run
announces; a run that emitted is seen by every later one.
"""

from __future__ import annotations

from airflow.sdk import DAG, CronTriggerTimetable, task

from llmops.config import dag_defaults
from llmops.corpus.assets import CORPUS_NAME, PARSER_CONFIG_ASSET, PARSER_VERSION_VARIABLE

with DAG(
    dag_id="corpus_parser_watch",
    description="Trigger corpus re-ingestion when the active parser version differs from the live snapshot's",
    schedule=CronTriggerTimetable("*/30 * * * *", timezone="UTC"),
    start_date=dag_defaults.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dag_defaults.tags("corpus"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
) as dag:

    @task.short_circuit(task_id="parser_changed", inlets=[PARSER_CONFIG_ASSET])
    def parser_changed(inlet_events=None) -> str | None:
        """The active parser version when it is neither live nor already announced (else skip)."""
        from airflow.sdk import Variable

        from llmops.corpus import ingest
        from llmops.corpus.assets import parser_version_to_announce
        from llmops.corpus.config import load_parser_config
        from llmops.io.s3 import client_from_connection

        active = Variable.get(PARSER_VERSION_VARIABLE, default="v1")
        load_parser_config(active)  # a variable naming no configuration fails here, loudly
        pointer, _ = ingest.read_pointer(client_from_connection(), Variable.get("llmops_bucket_corpus"), CORPUS_NAME)
        live = (pointer or {}).get("parser_version")
        latest = list(inlet_events[PARSER_CONFIG_ASSET].ascending(False).limit(1))
        announced = (latest[0].extra or {}).get("parser_version") if latest else None
        print(f"active parser {active}, live snapshot parser {live}, last announced {announced}")
        return parser_version_to_announce(active, live, announced)

    @task(task_id="announce_parser_change", outlets=[PARSER_CONFIG_ASSET])
    def announce_parser_change(version: str):
        """Emit the parser-config asset event: the event is the announcement."""
        from airflow.sdk import Metadata

        yield Metadata(PARSER_CONFIG_ASSET, {"parser_version": version})

    announce_parser_change(parser_changed())
