"""Receive and stage against a real S3 endpoint (``moto_server`` on a free port).

A small synthetic drop (one shard above the 5 MiB multipart threshold) is uploaded per test
under its own revision, then verified, quarantined or staged with the library's functions.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmops.core.manifests import MANIFEST_NAME, STAGED_MARKER, ManifestError, ManifestFile, weight_digest
from llmops.embedded import s3state
from llmops.embedded.services import Service, free_port
from llmops.io import integrity
from llmops.io import s3 as s3io
from llmops.refresh import staging

pytestmark = pytest.mark.integration

DROPS = "test-drops"
MODELS = "test-models"
MODEL = "tiny-chat"
PART = 5 * 1024 * 1024
IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "b" * 64


def _files(seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "config.json": b'{"architectures": ["LlamaForCausalLM"]}\n',
        "tokenizer.json": b'{"model": {"type": "BPE"}}\n',
        "model-00001-of-00002.safetensors": rng.randbytes(11 * 1024 * 1024),  # 3 parts of 5 MiB
        "model-00002-of-00002.safetensors": rng.randbytes(1024 * 1024),
        "sub/generation_config.json": b"{}\n",
    }


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real moto_server on a free port, its two buckets, and a client for it."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = os.environ.get("AWS_ACCESS_KEY_ID") or "test"
    os.environ["AWS_SECRET_ACCESS_KEY"] = os.environ.get("AWS_SECRET_ACCESS_KEY") or "test-secret"
    port = free_port()
    service = Service(name="s3-receive-stage", port=port, health_url=f"http://127.0.0.1:{port}/moto-api/",
                      argv=[str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                      run_dir=tmp_path_factory.mktemp("moto"), start_timeout_s=60)
    service.start()
    try:
        client = s3io.client(endpoint_url=f"http://127.0.0.1:{port}")
        s3state.ensure_buckets(client, [DROPS, MODELS])
        yield client
    finally:
        service.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _manifest(files: dict[str, bytes], revision: str) -> dict[str, Any]:
    return {
        "model": MODEL, "model_family": "llama", "source": "test", "revision": revision, "runtime_image": IMAGE,
        "created_at": datetime.now(UTC).isoformat(),
        "files": [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in files.items()],
    }


def _upload(s3: Any, revision: str, files: dict[str, bytes] | None = None,
            manifest_files: dict[str, bytes] | None = None) -> str:
    """Upload ``files`` then ``manifest.json`` (last) listing ``manifest_files``; return the prefix."""
    files = _files() if files is None else files
    prefix = staging.drop_prefix(MODEL, revision)
    for path, body in files.items():
        s3.put_object(Bucket=DROPS, Key=prefix + path, Body=body)
    s3io.write_json(s3, DROPS, prefix + MANIFEST_NAME, _manifest(manifest_files or files, revision))
    return prefix


def _verify(s3: Any, prefix: str) -> integrity.DropVerification:
    manifest = staging.read_drop_manifest(s3, DROPS, prefix)
    return integrity.verify_drop(s3, DROPS, prefix, manifest.files, workers=2)


def _snapshot(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    return {o.key: (o.size, o.etag) for o in s3io.list_prefix(s3, bucket, prefix)}


def _outcomes(result: integrity.DropVerification) -> dict[str, str]:
    return {f.path: f.outcome for f in result.files}


# ---------------------------------------------------------------------------------------------
# receive


def test_good_drop_verifies(s3: Any) -> None:
    prefix = _upload(s3, "good")
    result = _verify(s3, prefix)
    assert result.ok, result.message()
    assert set(_outcomes(result).values()) == {"ok"}
    assert result.bytes_read == sum(len(b) for b in _files().values())
    assert set(result.etags) == set(_files())
    assert result.location == f"s3://{DROPS}/{prefix}"


def test_corrupted_shard_is_a_sha256_mismatch(s3: Any) -> None:
    files = _files()
    corrupted = dict(files)
    shard = bytearray(files["model-00001-of-00002.safetensors"])
    shard[6 * 1024 * 1024] ^= 0xFF  # same size, one flipped byte (in the second part)
    corrupted["model-00001-of-00002.safetensors"] = bytes(shard)
    prefix = _upload(s3, "corrupted", corrupted, manifest_files=files)
    result = _verify(s3, prefix)
    assert not result.ok
    assert [f.path for f in result.bad] == ["model-00001-of-00002.safetensors"]
    bad = result.bad[0]
    assert bad.outcome == "sha256_mismatch" and bad.actual_size == bad.expected_size
    assert bad.actual_sha256 == hashlib.sha256(shard).hexdigest()
    assert "model-00001-of-00002.safetensors: content differs" in result.message()
    with pytest.raises(integrity.IntegrityError, match="upload the file again"):
        result.raise_for_problems()


def test_truncated_file_is_a_size_mismatch(s3: Any) -> None:
    files = _files()
    truncated = {**files, "model-00002-of-00002.safetensors": files["model-00002-of-00002.safetensors"][:-100]}
    prefix = _upload(s3, "truncated", truncated, manifest_files=files)
    result = _verify(s3, prefix)
    assert _outcomes(result)["model-00002-of-00002.safetensors"] == "size_mismatch"
    assert result.bad[0].actual_size == 1024 * 1024 - 100
    assert "truncated" in result.bad[0].describe()


def test_missing_and_extra_files_are_reported(s3: Any) -> None:
    files = _files()
    delivered = {k: v for k, v in files.items() if k != "sub/generation_config.json"}
    delivered["notes.txt"] = b"not listed"
    prefix = _upload(s3, "missing-extra", delivered, manifest_files=files)
    result = _verify(s3, prefix)
    assert _outcomes(result)["sub/generation_config.json"] == "missing"
    assert [(e.path, e.size) for e in result.extra] == [("notes.txt", 10)]
    problems = result.problems()
    assert any(p.startswith("sub/generation_config.json: missing; fix:") for p in problems)
    assert any(p.startswith("notes.txt: not in the manifest") for p in problems)


def test_manifest_location_mismatch_names_the_uri(s3: Any) -> None:
    prefix = staging.drop_prefix(MODEL, "misplaced")
    s3io.write_json(s3, DROPS, prefix + MANIFEST_NAME, _manifest({"a": b"a"}, "other"))
    with pytest.raises(ManifestError) as info:
        staging.read_drop_manifest(s3, DROPS, prefix)
    assert str(info.value).startswith(f"s3://{DROPS}/{prefix}{MANIFEST_NAME}: revision:")
    with pytest.raises(FileNotFoundError, match="no such object"):
        staging.read_drop_manifest(s3, DROPS, staging.drop_prefix(MODEL, "absent"))


def test_quarantine_copies_everything_and_leaves_the_drop_untouched(s3: Any) -> None:
    files = _files()
    delivered = {**files, "model-00002-of-00002.safetensors": b"short", "extra.bin": b"x" * 10}
    prefix = _upload(s3, "to-quarantine", delivered, manifest_files=files)
    s3.copy_object(Bucket=DROPS, Key=prefix + "config.json",
                   CopySource={"Bucket": DROPS, "Key": prefix + "config.json"}, Metadata={"origin": "trainer"},
                   MetadataDirective="REPLACE", ContentType="application/json")
    before = _snapshot(s3, DROPS, prefix)
    result = _verify(s3, prefix)
    quarantined = staging.quarantine_drop(s3, DROPS, prefix, result.to_dict(), part_size=PART, workers=2)

    assert _snapshot(s3, DROPS, prefix) == before  # nothing changed or deleted
    target = f"quarantine/{MODEL}/to-quarantine/"
    assert quarantined.quarantine_uri == f"s3://{DROPS}/{target}"
    copied = s3io.list_prefix(s3, DROPS, target)
    relative = {o.key[len(target):]: o.size for o in copied}
    assert relative.pop("reason.json") > 0
    assert relative == {k[len(prefix):]: size for k, (size, _) in before.items()}
    for key in before:
        original = s3.get_object(Bucket=DROPS, Key=key)["Body"].read()
        assert s3.get_object(Bucket=DROPS, Key=target + key[len(prefix):])["Body"].read() == original
    kept = s3.head_object(Bucket=DROPS, Key=target + "config.json")
    assert kept["Metadata"]["origin"] == "trainer" and kept["ContentType"] == "application/json"

    reason = s3io.read_json(s3, DROPS, target + "reason.json")
    assert reason["drop"] == f"s3://{DROPS}/{prefix}"
    assert [f["path"] for f in reason["bad_files"]] == ["model-00002-of-00002.safetensors"]
    assert reason["bad_files"][0]["outcome"] == "size_mismatch"
    assert [e["path"] for e in reason["extra"]] == ["extra.bin"]
    assert {o["path"] for o in reason["objects"]} == {k[len(prefix):] for k in before}

    again = staging.quarantine_drop(s3, DROPS, prefix, result.to_dict(), part_size=PART, workers=2)
    assert again.copied == () and set(again.skipped) == set(quarantined.copied)


# ---------------------------------------------------------------------------------------------
# stage


def _count_calls(s3: Any) -> dict[str, int]:
    counts = {"CopyObject": 0, "UploadPartCopy": 0, "CreateMultipartUpload": 0}

    def count(event_name: str, **_: Any) -> None:
        counts[event_name.rsplit(".", 1)[1]] += 1

    for name in counts:
        s3.meta.events.register(f"before-call.s3.{name}", count)
    return counts


def test_staging_uses_multipart_copy_and_a_second_run_copies_nothing(s3: Any) -> None:
    prefix = _upload(s3, "stage")
    verification = _verify(s3, prefix)
    manifest = staging.read_drop_manifest(s3, DROPS, prefix)
    staged = staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2,
                                source_etags=verification.etags)

    target = staging.staged_prefix(MODEL, manifest.weight_digest)
    assert staged.uri == f"s3://{MODELS}/{target}"
    assert set(staged.copied) == set(_files()) and not staged.already_staged
    assert staged.parts["model-00001-of-00002.safetensors"] == 3
    assert staged.parts["config.json"] == 0
    big = s3.head_object(Bucket=MODELS, Key=target + "model-00001-of-00002.safetensors")
    assert big["ETag"].strip('"').endswith("-3")
    first_part = s3.head_object(Bucket=MODELS, Key=target + "model-00001-of-00002.safetensors", PartNumber=1)
    assert first_part["PartsCount"] == 3
    for entry in manifest.files:
        meta = s3.head_object(Bucket=MODELS, Key=target + entry.path)["Metadata"]
        assert meta["sha256"] == entry.sha256 and meta["weight-digest"] == manifest.weight_digest
    # The staged bytes are the drop's bytes.
    check = integrity.verify_drop(s3, MODELS, target, manifest.files, workers=2, ignore=(STAGED_MARKER,))
    assert check.ok, check.message()
    marker = s3io.read_json(s3, MODELS, target + STAGED_MARKER)
    assert marker["weight_digest"] == manifest.weight_digest
    assert marker["source_drop"] == f"s3://{DROPS}/{prefix}"
    assert staging.read_staged_files(s3, MODELS, MODEL, manifest.weight_digest) == list(manifest.files)

    counts = _count_calls(s3)
    again = staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2)
    assert again.already_staged and again.copied == () and again.bytes_copied == 0
    # Without the marker, every object is recognised by size and sha256 metadata and skipped.
    s3.delete_object(Bucket=MODELS, Key=target + STAGED_MARKER)
    third = staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2)
    assert third.copied == () and set(third.skipped) == set(_files()) and not third.already_staged
    assert counts == {"CopyObject": 0, "UploadPartCopy": 0, "CreateMultipartUpload": 0}
    assert s3io.read_json(s3, MODELS, target + STAGED_MARKER)["weight_digest"] == manifest.weight_digest


def test_an_interrupted_multipart_copy_is_resumed(s3: Any) -> None:
    files = _files(seed=11)
    prefix = _upload(s3, "resume", files)
    manifest = staging.read_drop_manifest(s3, DROPS, prefix)
    target = staging.staged_prefix(MODEL, manifest.weight_digest)
    key = target + "model-00001-of-00002.safetensors"
    # An earlier attempt copied part 1 of 3 and died.
    upload = s3.create_multipart_upload(Bucket=MODELS, Key=key, Metadata={
        "sha256": manifest.files[2].sha256, "weight-digest": manifest.weight_digest})["UploadId"]
    s3.upload_part_copy(Bucket=MODELS, Key=key, UploadId=upload, PartNumber=1, CopySourceRange=f"bytes=0-{PART - 1}",
                        CopySource={"Bucket": DROPS, "Key": prefix + "model-00001-of-00002.safetensors"})

    counts = _count_calls(s3)
    staged = staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2)
    assert counts["CreateMultipartUpload"] == 0 and counts["UploadPartCopy"] == 2
    assert staged.parts["model-00001-of-00002.safetensors"] == 3
    body = s3.get_object(Bucket=MODELS, Key=key)["Body"].read()
    assert body == files["model-00001-of-00002.safetensors"]
    assert not s3.list_multipart_uploads(Bucket=MODELS, Prefix=key).get("Uploads")


def test_a_redelivered_identical_drop_has_the_same_digest_and_stages_nothing(s3: Any) -> None:
    first = staging.read_drop_manifest(s3, DROPS, _upload(s3, "first", _files(seed=3)))
    second = staging.read_drop_manifest(s3, DROPS, _upload(s3, "redelivered", _files(seed=3)))
    assert first.revision != second.revision
    assert first.weight_digest == second.weight_digest
    assert staging.stage_drop(s3, first, DROPS, MODELS, part_size=PART, workers=2).copied
    again = staging.stage_drop(s3, second, DROPS, MODELS, part_size=PART, workers=2)
    assert again.already_staged and again.copied == ()
    other = staging.read_drop_manifest(s3, DROPS, _upload(s3, "different", _files(seed=4)))
    assert other.weight_digest != first.weight_digest


def _forge(s3: Any, bucket: str, key: str, body: bytes) -> None:
    """Overwrite a staged object with ``body``, keeping its metadata (its sha256 claim included)."""
    metadata = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)


def test_the_marker_never_replaces_checking_the_staged_objects(s3: Any) -> None:
    files = _files(seed=21)
    prefix = _upload(s3, "overwritten-after-staging", files)
    manifest = staging.read_drop_manifest(s3, DROPS, prefix)
    target = staging.staged_prefix(MODEL, manifest.weight_digest)
    staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2)
    marker = s3io.read_json(s3, MODELS, target + STAGED_MARKER)

    # Same size, other bytes, the sha256 metadata kept: the marker still says "staged".
    shard = bytearray(files["model-00002-of-00002.safetensors"])
    shard[10] ^= 0xFF
    _forge(s3, MODELS, target + "model-00002-of-00002.safetensors", bytes(shard))
    again = staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2)
    assert not (again.already_staged and again.copied == ())
    assert again.copied == ("model-00002-of-00002.safetensors",)
    assert set(again.repaired) == {"model-00002-of-00002.safetensors"}
    check = integrity.verify_drop(s3, MODELS, target, manifest.files, workers=2, ignore=(STAGED_MARKER,))
    assert check.ok, check.message()
    assert set(marker["objects"]) == set(files)  # each staged object as copied
    repaired = s3io.read_json(s3, MODELS, target + STAGED_MARKER)
    assert repaired["staged_at"] == marker["staged_at"] and repaired["files"] == marker["files"]
    assert repaired["objects"] == marker["objects"]  # the same bytes again: the same ETags
    assert repaired["repaired"]["objects"] == again.repaired
    assert staging.read_staged_files(s3, MODELS, MODEL, manifest.weight_digest) == list(manifest.files)
    # Nothing changed since: nothing copied, nothing written.
    counts = _count_calls(s3)
    third = staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2)
    assert third.already_staged and third.copied == () and third.repaired == {}
    assert counts == {"CopyObject": 0, "UploadPartCopy": 0, "CreateMultipartUpload": 0}

    # Changed again while the drop is gone: the staging fails, naming the object, the drop and the fix.
    _forge(s3, MODELS, target + "model-00002-of-00002.safetensors", bytes(shard))
    s3.delete_object(Bucket=DROPS, Key=prefix + "model-00002-of-00002.safetensors")
    with pytest.raises(staging.StagingRefused) as info:
        staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2)
    message = str(info.value)
    assert f"s3://{DROPS}/{prefix}" in message and "model-00002-of-00002.safetensors: 1048576 bytes, ETag" in message
    assert "the drop no longer holds an object to copy" in message and "fix: publish the drop again" in message


def test_an_unrecorded_staged_object_is_hashed_not_trusted_for_its_metadata(s3: Any) -> None:
    files = _files(seed=22)
    prefix = _upload(s3, "unrecorded", files)
    manifest = staging.read_drop_manifest(s3, DROPS, prefix)
    target = staging.staged_prefix(MODEL, manifest.weight_digest)
    staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2)
    # An interrupted run left no marker, and one object was overwritten with a matching sha256 claim.
    s3.delete_object(Bucket=MODELS, Key=target + STAGED_MARKER)
    _forge(s3, MODELS, target + "config.json", files["config.json"].replace(b"Llama", b"Evil!"))  # same size
    result = staging.stage_drop(s3, manifest, DROPS, MODELS, part_size=PART, workers=2)
    assert result.copied == ("config.json",)
    assert set(result.hashed) == set(files) - {"config.json"}
    assert s3.get_object(Bucket=MODELS, Key=target + "config.json")["Body"].read() == files["config.json"]


def test_a_receipt_gates_staging_on_the_drop_as_received(s3: Any) -> None:
    prefix = _upload(s3, "receipted", _files(seed=23))
    manifest, manifest_etag = staging.read_drop_manifest_versioned(s3, DROPS, prefix)
    with pytest.raises(staging.StagingRefused, match="receive never passed it"):
        staging.check_received(s3, DROPS, prefix, MODELS)
    verification = _verify(s3, prefix)
    receipt = staging.DropReceipt(
        drop_uri=f"s3://{DROPS}/{prefix}", model=MODEL, revision="receipted", weight_digest=manifest.weight_digest,
        manifest_etag=manifest_etag,
        objects={f.path: staging.ObjectState.of(f.actual_size, f.etag) for f in verification.files})
    uri = staging.write_receipt(s3, MODELS, receipt)
    assert uri == f"s3://{MODELS}/receipts/{MODEL}/receipted/receipt.json"
    assert staging.check_received(s3, DROPS, prefix, MODELS, verification.etags) == (manifest, receipt)

    s3io.write_json(s3, DROPS, prefix + MANIFEST_NAME, {**_manifest(_files(seed=23), "receipted"), "source": "x"})
    with pytest.raises(staging.StagingRefused, match="manifest.json: rewritten since receive"):
        staging.check_received(s3, DROPS, prefix, MODELS)


# ---------------------------------------------------------------------------------------------
# local files (bench and serving init step)


def _write(root: Path, files: dict[str, bytes]) -> list[ManifestFile]:
    for path, body in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(body)
    return [ManifestFile(p, len(b), hashlib.sha256(b).hexdigest()) for p, b in files.items()]


def test_weight_digest_matches_the_documented_shell_recipe(tmp_path: Path) -> None:
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum")
    entries = _write(tmp_path, _files(seed=5))
    shell = subprocess.run("sha256sum " + " ".join(e.path for e in entries) + " | LC_ALL=C sort -k2 | sha256sum",
                           shell=True, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()[0]
    assert weight_digest(entries) == shell
    assert integrity.sha256_file(tmp_path / entries[2].path) == entries[2].sha256


def test_verify_local_dir_refuses_mismatches(tmp_path: Path) -> None:
    entries = _write(tmp_path, _files(seed=6))
    digest = weight_digest(entries)
    (tmp_path / STAGED_MARKER).write_text("{}")
    good = integrity.verify_local_dir(tmp_path, entries, expected_weight_digest=digest, workers=2)
    assert good.ok, good.message()
    good.raise_for_problems()

    shard = tmp_path / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    (tmp_path / "config.json").unlink()
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    bad = integrity.verify_local_dir(tmp_path, entries, workers=2)
    assert _outcomes(bad) == {**{e.path: "ok" for e in entries}, "config.json": "missing",
                              "model-00002-of-00002.safetensors": "sha256_mismatch"}
    assert [e.path for e in bad.extra] == ["chat_template.jinja"]
    with pytest.raises(integrity.IntegrityError, match="chat_template.jinja"):
        bad.raise_for_problems()
    with pytest.raises(integrity.IntegrityError, match="the deployment pins"):
        integrity.verify_local_dir(tmp_path, entries[:-1], expected_weight_digest=digest)
