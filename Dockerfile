# syntax=docker/dockerfile:1
# One image for the Airflow components AND the pod jobs' main containers
# (`python -m llmops.jobs.<name>`): the jobs image is this project's own code.
# vLLM runs from its own image (LLMOPS_VLLM_IMAGE), never from this one.
#
# The base is pinned by tag and digest. Resolve the digest when you cut a release
#   docker buildx imagetools inspect apache/airflow:3.3.2-python3.11
# and build with
#   docker build --build-arg AIRFLOW_BASE_DIGEST=sha256:<digest> -t <registry>/llmops-jobs:<version> .
# A build without the digest fails on purpose: an unpinned base is not reproducible.
ARG AIRFLOW_BASE_TAG=3.3.2-python3.11
ARG AIRFLOW_BASE_DIGEST
FROM apache/airflow:${AIRFLOW_BASE_TAG}@${AIRFLOW_BASE_DIGEST}

# nginx: the canary controller's local proxy when LLMOPS_CANARY_ROUTER is nginx.
USER root
RUN apt-get update && apt-get install -y --no-install-recommends nginx-light && rm -rf /var/lib/apt/lists/*
USER airflow
WORKDIR /opt/airflow

# One tested set: the top-level pins plus the full transitive lock.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/

# Pod jobs import the library from plugins/ and resolve include/ relative to WORKDIR.
ENV PYTHONPATH=/opt/airflow/plugins \
    LLMOPS_LAUNCHER=kubernetes
