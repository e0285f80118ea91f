"""The corpus pipeline's pod jobs, built from settings (templated values rendered at run time)."""

from __future__ import annotations

from typing import Any

from llmops.config.settings import Settings
from llmops.core.job_container import jobs_container
from llmops.core.podjob import PodJob, Resources, Volume, literal_template
from llmops.serving.weights import S3_ENDPOINT_TEMPLATE, with_s3_secrets

EXPERIMENT = "llmops-corpus"
SCRATCH = "/scratch"
BUCKET_TEMPLATE = "{{ var.value.llmops_bucket_corpus }}"
PARSER_VERSION_TEMPLATE = literal_template(
    "params.parser_version or var.value.get('llmops_corpus_parser_version', 'v1')")


PARSE_TIMEOUT_S = 3600
"""Deadline of one parse pod (one shard of ``docs_per_shard`` documents)."""

def _job(settings: Settings, name: str, module: str, args: list[str], *, cpu: str = "1", memory: str = "2Gi",
         timeout_s: int = 3600, scratch: str = "10Gi") -> PodJob:
    container = with_s3_secrets(jobs_container(
        settings, module, [*args, "--scratch", SCRATCH],
        env={"AWS_ENDPOINT_URL": S3_ENDPOINT_TEMPLATE, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
        resources=Resources(cpu=cpu, memory=memory)))
    return PodJob(name=name, main=container, volumes=(Volume("scratch", SCRATCH, "scratch", scratch),),
                  timeout_s=timeout_s, labels={"llmops/pipeline": "corpus"})


def plan_job(settings: Settings, corpus: str) -> PodJob:
    """List the source prefix once and write the run's source listing."""
    return _job(settings, "corpus-plan", "corpus_plan", [
        "--source-uri", literal_template("params.source_prefix"), "--bucket", BUCKET_TEMPLATE, "--corpus", corpus,
        "--run-id", "{{ run_id }}", "--docs-per-shard", literal_template("params.docs_per_shard")], timeout_s=900)


def parse_jobs(settings: Settings, corpus: str, *, shards: int, bucket: str, run_id: str, parser_version: str,
               s3_endpoint: str | None, tracking_uri: str) -> list[dict[str, Any]]:
    """One parse pod job per shard, with final values (mapped pod jobs are not template-rendered)."""
    jobs = []
    for shard in range(shards):
        job = _job(settings, f"corpus-parse-{shard}", "corpus_parse", [
            "--bucket", bucket, "--corpus", corpus, "--run-id", run_id, "--shard", str(shard),
            "--parser-version", parser_version], cpu="1", memory="4Gi", timeout_s=PARSE_TIMEOUT_S)
        data = job.to_dict()
        data["main"]["env"]["AWS_ENDPOINT_URL"] = s3_endpoint or ""
        data["main"]["env"]["MLFLOW_TRACKING_URI"] = tracking_uri
        jobs.append(data)
    return jobs


def validate_job(settings: Settings, corpus: str) -> PodJob:
    """Great Expectations schema checks, parity and drift against the live snapshot; MLflow record."""
    return _job(settings, "corpus-validate", "corpus_validate", [
        "--bucket", BUCKET_TEMPLATE, "--corpus", corpus, "--run-id", "{{ run_id }}",
        "--parser-version", PARSER_VERSION_TEMPLATE,
        "--source-uri", literal_template("params.source_prefix"), "--experiment", EXPERIMENT,
        "--allow-type-drop", literal_template("params.allow_type_drop | lower")], cpu="2", memory="4Gi")


def publish_job(settings: Settings, corpus: str) -> PodJob:
    """Copy to the content-addressed snapshot, embed, index, swap the live pointer."""
    return _job(settings, "corpus-publish", "corpus_publish", [
        "--bucket", BUCKET_TEMPLATE, "--corpus", corpus, "--run-id", "{{ run_id }}",
        "--force", literal_template("params.force | lower"), "--vector-store", vector_store(settings),
        "--experiment", EXPERIMENT], cpu="2", memory="4Gi")


def vector_store(settings: Settings) -> str:
    """``local`` (embedded default) or ``qdrant`` (``LLMOPS_CORPUS_VECTOR_STORE``)."""
    store = settings.corpus_vector_store
    if store not in ("local", "qdrant"):
        raise ValueError(f"LLMOPS_CORPUS_VECTOR_STORE={store!r}: use 'local' or 'qdrant'")
    return store
