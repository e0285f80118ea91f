"""The one way to reach S3: the client factory, object locations, listing and JSON documents.

Every S3 client of the project comes from :func:`client`: inside an Airflow task through
:func:`client_from_connection` (the ``llmops_s3`` connection), inside a pod through
:func:`client_from_env` (the pod's env, credentials from a Kubernetes Secret). Both end in the
same call, so the lease, the sensor, promote and the pod jobs all use the same credentials
chain, region, retries and connection pool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from llmops.config import settings

DEFAULT_REGION = "us-east-1"
S3_CONN_ID = "llmops_s3"


class StorageError(RuntimeError):
    """An S3 operation could not complete; the message names the object and the fix."""


@dataclass(frozen=True)
class S3Object:
    """One listed object."""

    key: str
    size: int
    etag: str


def client(*, endpoint_url: str | None = None, region: str | None = None, access_key_id: str | None = None,
           secret_access_key: str | None = None, session_token: str | None = None,
           max_pool_connections: int = 16) -> Any:
    """A boto3 S3 client: ``endpoint_url`` empty means AWS S3 itself; credentials not given come
    from boto3's default chain (env, instance profile, IRSA). Standard retries absorb transient errors.
    """
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=max_pool_connections, retries={"mode": "standard", "max_attempts": 5})
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or DEFAULT_REGION,
                        aws_access_key_id=access_key_id or None, aws_secret_access_key=secret_access_key or None,
                        aws_session_token=session_token or None, config=config)


def client_from_env(max_pool_connections: int = 16) -> Any:
    """The S3 client of a pod job: endpoint ``AWS_ENDPOINT_URL`` (unset or empty: AWS itself), region
    ``AWS_DEFAULT_REGION`` / ``AWS_REGION``; credentials from the pod's env (a Kubernetes Secret)."""
    return client(endpoint_url=settings.env("AWS_ENDPOINT_URL"),
                  region=settings.env("AWS_DEFAULT_REGION") or settings.env("AWS_REGION"),
                  max_pool_connections=max_pool_connections)


def client_from_connection(conn_id: str = S3_CONN_ID, max_pool_connections: int = 16) -> Any:
    """The S3 client of an Airflow task, from the Airflow connection ``conn_id``: login/password
    (when set) as the access key pair, extras ``endpoint_url`` and ``region_name``."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    return client(endpoint_url=extra.get("endpoint_url"), region=extra.get("region_name"),
                  access_key_id=conn.login or extra.get("aws_access_key_id"),
                  secret_access_key=conn.password or extra.get("aws_secret_access_key"),
                  max_pool_connections=max_pool_connections)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; the key may be empty or a prefix."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ValueError(f"{uri!r} is not an s3:// URI; fix: write s3://<bucket>/<key or prefix>")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def s3_uri(bucket: str, key: str = "") -> str:
    """``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def list_prefix(s3: Any, bucket: str, prefix: str) -> list[S3Object]:
    """Every object under ``prefix`` (all pages), sorted by key."""
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            objects.append(S3Object(key=obj["Key"], size=int(obj["Size"]), etag=obj.get("ETag", "")))
    return sorted(objects, key=lambda o: o.key)


def head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """``head_object``'s answer, or ``None`` when the object does not exist."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


TOO_LARGE_FIX = "this object is larger than any the platform writes: check what wrote it"


def read_bytes(s3: Any, bucket: str, key: str, *, max_bytes: int, what: str = "the object",
               fix: str = TOO_LARGE_FIX) -> tuple[bytes, str]:
    """The body of ``s3://bucket/key`` (at most ``max_bytes``) and the ETag of that very version.

    Raises ``FileNotFoundError`` naming the URI, or ``InputTooLargeError`` when the object is
    larger: its declared size is checked first and no more than ``max_bytes + 1`` bytes are read.
    """
    from llmops.core.limits import read_at_most

    uri = s3_uri(bucket, key)
    try:
        answer = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            raise FileNotFoundError(f"{uri}: no such object; fix: check the bucket and key") from exc
        raise
    with answer["Body"] as stream:
        body = read_at_most(stream, uri, what, max_bytes, fix, declared_size=answer.get("ContentLength"))
    return body, str(answer.get("ETag", "")).strip('"')


def read_json_if_exists(s3: Any, bucket: str, key: str, *, max_bytes: int | None = None) -> Any | None:
    """:func:`read_json`, or ``None`` when there is no such object."""
    try:
        return read_json(s3, bucket, key, **({"max_bytes": max_bytes} if max_bytes else {}))
    except FileNotFoundError:
        return None


JSON_OBJECT_MAX_BYTES = 16 * 1024 * 1024
"""Largest JSON state object read by default (a pointer, a deployment record with its history)."""


def read_json(s3: Any, bucket: str, key: str, *, max_bytes: int = JSON_OBJECT_MAX_BYTES) -> Any:
    """The parsed JSON document at ``s3://bucket/key``, at most ``max_bytes`` of it.

    Raises ``FileNotFoundError`` (no such object), ``InputTooLargeError`` (larger than
    ``max_bytes``: its declared size is checked before anything is read, and no more than
    ``max_bytes + 1`` bytes are ever read) or ``ValueError`` (not JSON), naming the URI.
    """
    uri = s3_uri(bucket, key)
    body, _ = read_bytes(s3, bucket, key, max_bytes=max_bytes, what="the JSON object")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{uri}: not valid JSON ({exc}); fix: rewrite it as UTF-8 JSON") from exc


def write_json(s3: Any, bucket: str, key: str, payload: Any) -> str:
    """Write ``payload`` as JSON to ``s3://bucket/key`` with one PUT (readers see all or nothing).

    Returns the new object's ETag.
    """
    body = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode()
    answer = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return str(answer.get("ETag", ""))


def create_json(s3: Any, bucket: str, key: str, payload: Any) -> bool:
    """Write ``payload`` to ``s3://bucket/key`` only if no object is there (``If-None-Match: *``).

    Returns False, writing nothing, when the object already exists: the first writer wins,
    which is what makes a record written by a retried or concurrent task exactly-once.
    """
    body = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*")
    except ClientError as exc:
        if is_precondition_failed(exc):
            return False
        raise
    return True


def is_precondition_failed(exc: ClientError) -> bool:
    """True when a conditional request lost: the object exists, or changed since it was read."""
    return exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412")


def is_not_found(exc: ClientError) -> bool:
    """True when ``exc`` says the bucket or key does not exist."""
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")
