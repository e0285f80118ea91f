"""The one S3 client factory: a task's client from the Airflow connection, a pod's from its env,
both through the same constructor (endpoint, region, credentials, retries)."""

from __future__ import annotations

import json

import pytest

from llmops.io import s3


def test_task_client_comes_from_the_airflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_S3_TEST", json.dumps({
        "conn_type": "aws", "login": "AKIDTEST", "password": "secret-test",
        "extra": {"endpoint_url": "http://127.0.0.1:9999", "region_name": "eu-west-1"}}))
    client = s3.client_from_connection("llmops_s3_test")
    assert client.meta.endpoint_url == "http://127.0.0.1:9999"
    assert client.meta.region_name == "eu-west-1"
    credentials = client._request_signer._credentials  # what every request is signed with
    assert (credentials.access_key, credentials.secret_key) == ("AKIDTEST", "secret-test")
    assert client.meta.config.retries["mode"] == "standard"


def test_pod_client_comes_from_the_pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9998")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-the-secret")
    client = s3.client_from_env()
    assert client.meta.endpoint_url == "http://127.0.0.1:9998"
    assert client.meta.region_name == "ap-south-1"
    assert client._request_signer._credentials.access_key == "from-the-secret"


def test_an_empty_endpoint_means_aws_s3_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")  # a templated connection field renders empty in production
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    client = s3.client_from_env()
    assert client.meta.endpoint_url == "https://s3.amazonaws.com"
    assert client.meta.region_name == s3.DEFAULT_REGION


class _Body:
    """An S3 body stream that counts what is read from it."""

    def __init__(self, data: bytes) -> None:
        self.data, self.read_bytes = data, 0

    def read(self, size: int = -1) -> bytes:
        size = len(self.data) - self.read_bytes if size < 0 else size
        chunk = self.data[self.read_bytes:self.read_bytes + size]
        self.read_bytes += len(chunk)
        return chunk

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *_: object) -> None:
        return None


class _OneObject:
    def __init__(self, body: _Body, declared: int | None) -> None:
        self.body, self.declared = body, declared

    def get_object(self, **_: object) -> dict:
        return {"Body": self.body, **({"ContentLength": self.declared} if self.declared is not None else {})}


@pytest.mark.parametrize("declared", [None, 10], ids=["no-declared-size", "declared-size-lies"])
def test_read_json_never_reads_more_than_its_limit(declared: int | None) -> None:
    from llmops.core.limits import InputTooLargeError

    body = _Body(json.dumps({"history": ["x" * 100] * 1000}).encode())
    with pytest.raises(InputTooLargeError, match=r"s3://bucket/state\.json"):
        s3.read_json(_OneObject(body, declared), "bucket", "state.json", max_bytes=1024)
    assert body.read_bytes <= 1025


def test_read_json_refuses_a_declared_size_over_the_limit_before_reading() -> None:
    from llmops.core.limits import InputTooLargeError

    body = _Body(b"{}")
    with pytest.raises(InputTooLargeError):
        s3.read_json(_OneObject(body, 10**9), "bucket", "state.json")
    assert body.read_bytes == 0
    assert s3.read_json(_OneObject(_Body(b'{"a": 1}'), 8), "bucket", "state.json") == {"a": 1}
