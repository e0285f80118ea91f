"""User input over its size limit is refused, naming the input and the limit, without reading it all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from llmops.core import limits
from llmops.core.hardware import HardwareConfigError, load_file
from llmops.core.limits import InputTooLargeError, check_size, read_at_most
from llmops.core.manifests import ManifestError, load_drop_manifest, parse_drop_manifest
from llmops.evals.evalset import EvalSetError, load_evalset
from llmops.refresh.lease import LeaseError, read_lease

ROOT = Path(__file__).resolve().parents[2]


def test_check_size_names_input_limit_and_fix() -> None:
    check_size("s3://b/k", "the object", 10, 10, "shrink it")
    with pytest.raises(InputTooLargeError, match=r"^s3://b/k: the object is 11 bytes, over the limit of 10 bytes "
                                                 r"\(llmops\.core\.limits\.X\); fix: shrink it$"):
        check_size("s3://b/k", "the object", 11, 10, "shrink it", name="X")
    with pytest.raises(InputTooLargeError, match=r"65 KiB.*64 KiB|66560 bytes.*65536 bytes \(64 KiB\)"):
        check_size("f", "line 1", 65 * 1024, limits.EVALSET_LINE_MAX_BYTES, "shorten it")


class _Stream:
    """An endless stream that counts what was read from it."""

    def __init__(self) -> None:
        self.read_total = 0

    def read(self, size: int = -1) -> bytes:
        assert size >= 0, "an unbounded read()"
        chunk = min(size, 7)  # a network stream returns short reads
        self.read_total += chunk
        return b"x" * chunk


def test_read_at_most_never_reads_more_than_the_limit_plus_one() -> None:
    stream = _Stream()
    with pytest.raises(InputTooLargeError, match="over the limit of 100 bytes"):
        read_at_most(stream, "s3://b/k", "the object", 100, "shrink it")
    assert stream.read_total == 101


def test_read_at_most_refuses_a_declared_size_before_reading() -> None:
    stream = _Stream()
    with pytest.raises(InputTooLargeError):
        read_at_most(stream, "s3://b/k", "the object", 100, "shrink it", declared_size=10**12)
    assert stream.read_total == 0


def test_hardware_config_over_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "h100x1.yaml"
    path.write_bytes((ROOT / "include" / "hardware_configs" / "h100x1.yaml").read_bytes()
                     + b"#" * limits.HARDWARE_CONFIG_MAX_BYTES)
    with pytest.raises(HardwareConfigError, match=r"h100x1\.yaml: .*over the limit of 262144 bytes \(256 KiB\) "
                                                  r"\(llmops\.core\.limits\.HARDWARE_CONFIG_MAX_BYTES\)"):
        load_file(path)


def _evalset(tmp_path: Path) -> Path:
    for name in ("tiny_chat_weekly_v1.yaml", "tiny_chat_weekly_v1.jsonl"):
        shutil.copy(ROOT / "include" / "evalsets" / name, tmp_path / name)
    return tmp_path / "tiny_chat_weekly_v1.yaml"


def test_evalset_line_over_its_limit_names_file_line_and_limit(tmp_path: Path) -> None:
    config = _evalset(tmp_path)
    data = tmp_path / "tiny_chat_weekly_v1.jsonl"
    lines = data.read_text().splitlines()
    item = json.loads(lines[1]) | {"prompt": "x" * limits.EVALSET_LINE_MAX_BYTES}
    data.write_text("\n".join([lines[0], json.dumps(item), *lines[2:]]) + "\n")
    with pytest.raises(EvalSetError, match=r"tiny_chat_weekly_v1\.jsonl: line 2: .*over the limit of 65536 bytes "
                                           r".*EVALSET_LINE_MAX_BYTES"):
        load_evalset(config)


def test_evalset_item_count_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmops.evals.evalset as evalset

    monkeypatch.setattr(evalset, "EVALSET_MAX_ITEMS", 150)
    with pytest.raises(EvalSetError, match=r"tiny_chat_weekly_v1\.jsonl: line 151: .*over the limit of 150 items"):
        load_evalset(_evalset(tmp_path))


def test_drop_manifest_bytes_and_file_count_are_capped() -> None:
    uri = "s3://drops/m/r/manifest.json"
    with pytest.raises(ManifestError, match=r"over the limit of 4194304 bytes \(4 MiB\).*MANIFEST_MAX_BYTES"):
        load_drop_manifest(b" " * (limits.MANIFEST_MAX_BYTES + 1), uri)
    files = [{"path": f"f{i}", "size": 1, "sha256": "a" * 64} for i in range(limits.MANIFEST_MAX_FILES + 1)]
    data = {"model": "m", "model_family": "llama", "source": "s", "revision": "r",
            "runtime_image": "r@sha256:" + "b" * 64, "created_at": "2026-11-23T12:00:00Z", "files": files}
    with pytest.raises(ManifestError, match=r"files: lists 10001 files, over the limit of 10000"):
        parse_drop_manifest(data, uri)


class _S3:
    def __init__(self, content_length: int, body: Any) -> None:
        self.content_length, self.body = content_length, body

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # boto3's parameter names
        return {"Body": self.body, "ETag": '"e"', "ContentLength": self.content_length}


def test_lease_over_its_limit_is_refused_before_reading() -> None:
    stream = _Stream()
    with pytest.raises(LeaseError, match=r"tiny-chat\.json: the lease object: is .* over the limit of 65536 bytes"):
        read_lease(_S3(10**9, stream), "models", "tiny-chat")
    assert stream.read_total == 0


def test_lease_body_longer_than_declared_is_still_bounded() -> None:
    stream = _Stream()
    with pytest.raises(LeaseError, match="LEASE_MAX_BYTES"):
        read_lease(_S3(10, stream), "models", "tiny-chat")
    assert stream.read_total == limits.LEASE_MAX_BYTES + 1
