"""The embedded platform's S3 save/restore: keys are data, never paths out of the save folder."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from llmops.embedded import s3state

HOSTILE_KEYS = ["../escape.txt", "../../etc/llmops-pwned", "/abs/path.json", "a/./b", "a//b", "dir/",
                "100%.txt", "x/..", "weights.part", "normal/key.json", "ünï/çødé.txt"]


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="llmops-drops")
        yield client


def _objects(s3, bucket: str) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def test_hostile_keys_stay_inside_the_save_folder_and_come_back_exactly(s3, tmp_path: Path) -> None:
    root = tmp_path / "data" / "s3"
    for i, key in enumerate(HOSTILE_KEYS):
        s3.put_object(Bucket="llmops-drops", Key=key, Body=f"body {i}".encode())
    before = _objects(s3, "llmops-drops")
    assert s3state.save(s3, root) == len(HOSTILE_KEYS)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not p.resolve().is_relative_to(root.resolve())]
    assert outside == []  # nothing written next to or above the save folder
    for bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    assert s3state.restore(s3, root) == len(HOSTILE_KEYS)
    assert _objects(s3, "llmops-drops") == before  # every key and body, nothing lost or renamed


def test_plain_keys_keep_their_readable_layout() -> None:
    assert s3state.key_to_relpath("tiny-chat/r1/model.safetensors") == "tiny-chat/r1/model.safetensors"
    for key in HOSTILE_KEYS:
        assert s3state.relpath_to_key(s3state.key_to_relpath(key)) == key
        assert ".." not in s3state.key_to_relpath(key).split("/")
