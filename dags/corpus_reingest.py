"""
### Corpus re-ingestion with content-type schema checks

Re-ingests the retrieval corpus the served model grounds on, so that a parser change can
never silently drop documents:

1. **plan** (pod job): lists the source prefix once (HTML, Markdown, text, PDF, DOCX) and
   writes the run's source listing, split into shards.
2. **parse** (pod jobs mapped over the shards): pinned parsers turn each document into elements
   with an explicit `content_type` (parser configuration `include/corpus/parsers/<version>.yaml`),
   chunked and streamed to Parquet. An unreadable document is listed as rejected with its reason.
3. **validate** (pod job): Great Expectations checks every chunk (content types within the
   taxonomy `include/corpus/taxonomy.yaml`, required fields non-null, chunk lengths within
   bounds), document parity (every source chunked or rejected with a reason) and the drift of
   content types against the live snapshot (vanished or sharply fallen types). The result,
   Data Docs and counts per content type go to MLflow (experiment `llmops-corpus`).
4. **check_verdict**: a failing snapshot fails the run here (no retry) naming the new or missing
   content types; its failing rows and report are under `corpus/main/quarantine/<run>/`, and
   the live snapshot stays live.
5. **publish** (pod job): content-addressed snapshot `corpus/main/snapshots/sha256-<id>/`,
   offline embeddings, vector index, then the atomic swap of `corpus/main/current.json`.
6. **emit_corpus_asset**: an event on the corpus asset (`llmops-corpus-main`) whenever the
   live snapshot changed, so an eval run follows every corpus change.

Runs nightly, when `corpus_parser_watch` sees a new parser version, or by hand (Params:
source prefix, parser version, force, allow_type_drop).
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, task

from llmops.config import dag_defaults, settings
from llmops.corpus import plan as corpus_plan
from llmops.corpus.assets import CORPUS_ASSET, CORPUS_NAME, PARSER_CONFIG_ASSET
from llmops.launch import mapped_pod_job_task, pod_job_task

SETTINGS = settings.load()
PARSER_VERSIONS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "include" / "corpus" / "parsers")
                         .glob("v*.yaml"))

with DAG(
    dag_id="corpus_reingest",
    description="Parse, schema-check (Great Expectations) and publish the retrieval corpus snapshot",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
                                 assets=PARSER_CONFIG_ASSET),
    start_date=dag_defaults.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dag_defaults.tags("corpus"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
    params={
        "source_prefix": Param("s3://llmops-corpus/sources/main/", type="string", pattern="^s3://[^/]+/.*$",
                               maxLength=dag_defaults.URI_MAX_LENGTH,
                               description="Where the source documents are: s3://<bucket>/<prefix>/"),
        "parser_version": Param("", type="string", enum=["", *PARSER_VERSIONS],
                                description="Parser configuration (include/corpus/parsers/<version>.yaml); "
                                            "empty: the active one (variable llmops_corpus_parser_version)"),
        "force": Param(False, type="boolean",
                       description="Publish (re-embed, swap the pointer, emit the asset) even if nothing changed"),
        "allow_type_drop": Param(False, type="boolean",
                                 description="Accept content types that vanished or fell against the live snapshot"),
        "docs_per_shard": Param(500, type="integer", minimum=1, maximum=100000,
                                description="Documents per parse pod job"),
    },
) as dag:
    plan = pod_job_task(corpus_plan.plan_job(SETTINGS, CORPUS_NAME), task_id="plan")

    @task(task_id="plan_parse")
    def plan_parse(planned: dict, run_id: str | None = None, params: dict | None = None) -> list[dict]:
        """One parse pod job per shard (final values: mapped pod jobs are not template-rendered).

        An empty source prefix fails the run here without retries: no retry can fill it.
        """
        from airflow.sdk import BaseHook, Variable
        from airflow.sdk.exceptions import AirflowFailException

        if int(planned["documents"]) == 0:
            raise AirflowFailException(f"no source documents under {params['source_prefix']}: nothing to "
                                       "ingest, the live snapshot stays live; fix the Param source_prefix")
        version = params["parser_version"] or Variable.get("llmops_corpus_parser_version", default="v1")
        return corpus_plan.parse_jobs(SETTINGS, CORPUS_NAME, shards=int(planned["shards"]),
                                   bucket=Variable.get("llmops_bucket_corpus"), run_id=run_id,
                                   parser_version=version,
                                   s3_endpoint=BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url"),
                                   tracking_uri=BaseHook.get_connection("llmops_mlflow").host)

    parse = mapped_pod_job_task(task_id="parse", pod_jobs=plan_parse(plan.output),
                                max_pod_timeout_s=corpus_plan.PARSE_TIMEOUT_S)
    validate = pod_job_task(corpus_plan.validate_job(SETTINGS, CORPUS_NAME), task_id="validate")
    parse >> validate

    @task(task_id="check_verdict", multiple_outputs=True)
    def check_verdict(result: dict) -> dict:
        """A rejected snapshot fails the run with the report's message (a verdict: no retry)."""
        from airflow.sdk.exceptions import AirflowFailException

        if result["status"] != "passed":
            raise AirflowFailException(f"{result['message']} (quarantine: {result['quarantine_uri']}; "
                                       f"MLflow run {result['mlflow_run_id']}); the live snapshot stays live")
        return result

    publish = pod_job_task(corpus_plan.publish_job(SETTINGS, CORPUS_NAME), task_id="publish")
    check_verdict(validate.output) >> publish

    @task(task_id="emit_corpus_asset", outlets=[CORPUS_ASSET])
    def emit_corpus_asset(result: dict):
        """An asset event with the new snapshot; skipped when the live snapshot did not change."""
        from airflow.sdk import Metadata
        from airflow.sdk.exceptions import AirflowSkipException

        if result["status"] != "published":
            raise AirflowSkipException(f"live snapshot unchanged (sha256-{result['snapshot_id']}): no asset event")
        yield Metadata(CORPUS_ASSET, {k: result[k] for k in ("snapshot_id", "uri", "chunks", "parser_version",
                                                              "previous_snapshot_id")})
        return result

    emit_corpus_asset(publish.output)
