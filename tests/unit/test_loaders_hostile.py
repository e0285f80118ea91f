"""Every loader of user input ends a hostile input in its own error, naming the file and the field or line.

Each loader gets the same battery: bytes that are not UTF-8, a BOM, an empty file, a top level
that is a list/string/number/null, a YAML alias bomb, deep nesting, duplicate keys, non-string
keys, Python tags; and, starting from a shipped valid document, every field replaced by a
value of each wrong type (list, mapping, string, bool, null, NaN, infinity, negative, huge),
every field removed, and an unknown field added. The loader must either accept the document
or raise its documented ``ValueError`` subclass whose message names the file; nothing else.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.benchmarks.workloads import Workload, WorkloadError, load_matrix
from llmops.core.deployment import DeploymentManifest
from llmops.core.hardware import HardwareConfigError, load_file
from llmops.core.manifests import ManifestError, load_drop_manifest, parse_drop_manifest
from llmops.corpus.config import CorpusConfigError, load_parser_config, load_suite_dict, load_taxonomy
from llmops.evals.evalset import EvalSetError, load_evalset
from llmops.refresh.lease import LeaseError, read_lease

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "include"

BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)))
WRONG_VALUES: list[Any] = [[], [1, [2]], {}, {"k": "v"}, "text", "", True, None, float("nan"), float("inf"), -1,
                           10**30, 0.5, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
HOSTILE_TEXT: dict[str, bytes] = {
    "not utf-8": b"name: caf\xe9\n",
    "bom + list": "\ufeff- a\n- b\n".encode(),
    "empty": b"",
    "only a comment": b"# nothing\n",
    "top list": b"- 1\n- 2\n",
    "top string": b"just some text\n",
    "top number": b"42\n",
    "top null": b"null\n",
    "alias bomb": BOMB.encode(),
    "deep nesting": b"a: " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "duplicate key": b"a: 1\na: 2\n",
    "non-string key": b"1: one\ntrue: yes\n",
    "python tag": b"a: !!python/object/apply:os.system ['true']\n",
    "bad yaml": b"a: [unclosed\n",
    "tab indentation": b"a:\n\tb: 1\n",
    "nul byte": b"a: \x00\n",
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of a nested document (list items by index)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value[:2]):
            yield (*prefix, index)
            yield from _paths(child, (*prefix, index))


def _mutations(doc: Any) -> Iterator[tuple[str, Any]]:
    """(label, document) for each field x wrong value, each removed field and an unknown field per mapping."""
    for path in _paths(doc):
        for value in WRONG_VALUES:
            mutated = copy.deepcopy(doc)
            parent = mutated
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = copy.deepcopy(value)
            yield f"{'.'.join(map(str, path))}={value!r:.20}", mutated
        mutated = copy.deepcopy(doc)
        parent = mutated
        for part in path[:-1]:
            parent = parent[part]
        del parent[path[-1]]
        yield f"{'.'.join(map(str, path))} removed", mutated
        if isinstance(parent, dict):
            with_extra = copy.deepcopy(doc)
            target = with_extra
            for part in path[:-1]:
                target = target[part]
            target["zz_unknown_field"] = 1
            yield f"{'.'.join(map(str, path[:-1])) or '(top)'} + unknown field", with_extra


def _assert_refused_or_loaded(load: Callable[[], Any], error: type[Exception], names: list[str]) -> None:
    try:
        load()
    except error as exc:
        message = str(exc)
        assert any(name in message for name in names), f"{message!r} does not name {names}"
        assert "fix" in message or "use one of" in message or "set " in message, f"no fix in {message!r}"
        assert len(message) < 20_000, "an error message must stay readable"
    # Any other exception type fails the test with its own traceback.


# --- hardware classes -------------------------------------------------------------------------------------------

HW_SOURCE = INCLUDE / "hardware_configs" / "h100x1.yaml"


def _hw_load(tmp_path: Path, body: bytes) -> Callable[[], Any]:
    path = tmp_path / "h100x1.yaml"
    path.write_bytes(body)
    return lambda: load_file(path)


@pytest.mark.parametrize("label", sorted(HOSTILE_TEXT))
def test_hardware_config_hostile_text(tmp_path: Path, label: str) -> None:
    with pytest.raises(HardwareConfigError, match=r"h100x1\.yaml: "):
        _hw_load(tmp_path, HOSTILE_TEXT[label])()


def test_hardware_config_every_field_wrong(tmp_path: Path) -> None:
    doc = yaml.safe_load(HW_SOURCE.read_text())
    count = 0
    for _label, mutated in _mutations(doc):
        _assert_refused_or_loaded(_hw_load(tmp_path, yaml.safe_dump(mutated).encode()), HardwareConfigError,
                                  ["h100x1.yaml"])
        count += 1
    assert count > 300


@pytest.mark.parametrize("value", [".nan", ".inf", "true", "-5", "[1]"])
def test_hardware_config_refuses_non_finite_and_wrong_types_by_field(tmp_path: Path, value: str) -> None:
    text = HW_SOURCE.read_text().replace("ttft_p99_ms: 800", f"ttft_p99_ms: {value}")
    with pytest.raises(HardwareConfigError, match=r"h100x1\.yaml: slo\.ttft_p99_ms: .*fix"):
        _hw_load(tmp_path, text.encode())()


def test_hardware_config_duplicate_key_names_its_line(tmp_path: Path) -> None:
    text = HW_SOURCE.read_text().replace("  count: 1\n", "  count: 1\n  count: 2\n")
    line = text.splitlines().index("  count: 2") + 1
    with pytest.raises(HardwareConfigError, match=rf"h100x1\.yaml: line {line}: .*'count' appears twice"):
        _hw_load(tmp_path, text.encode())()


def test_hardware_config_not_utf8_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(HardwareConfigError, match=r"h100x1\.yaml: line 2: byte 0xe9 is not UTF-8.*fix"):
        _hw_load(tmp_path, b"# ok\nname: caf\xe9\n")()


def test_hardware_config_bom_is_accepted(tmp_path: Path) -> None:
    assert _hw_load(tmp_path, b"\xef\xbb\xbf" + HW_SOURCE.read_bytes())().name == "h100x1"


# --- eval sets --------------------------------------------------------------------------------------------------

def _evalset_dir(tmp_path: Path) -> Path:
    for name in ("tiny_chat_weekly_v1.yaml", "tiny_chat_weekly_v1.jsonl"):
        shutil.copy(INCLUDE / "evalsets" / name, tmp_path / name)
    return tmp_path / "tiny_chat_weekly_v1.yaml"


@pytest.mark.parametrize("label", sorted(HOSTILE_TEXT))
def test_evalset_config_hostile_text(tmp_path: Path, label: str) -> None:
    config = _evalset_dir(tmp_path)
    config.write_bytes(HOSTILE_TEXT[label])
    with pytest.raises(EvalSetError, match=r"tiny_chat_weekly_v1\.yaml: "):
        load_evalset(config)


def test_evalset_config_every_field_wrong(tmp_path: Path) -> None:
    config = _evalset_dir(tmp_path)
    doc = yaml.safe_load(config.read_text())
    for _label, mutated in _mutations(doc):
        config.write_text(yaml.safe_dump(mutated))
        _assert_refused_or_loaded(lambda: load_evalset(config), EvalSetError,
                                  ["tiny_chat_weekly_v1.yaml", "tiny_chat_weekly_v1.jsonl"])


@pytest.mark.parametrize("file", ["/etc/passwd", "../outside.jsonl", "sub/../../x.jsonl"])
def test_evalset_file_must_stay_in_its_folder(tmp_path: Path, file: str) -> None:
    config = _evalset_dir(tmp_path)
    config.write_text(config.read_text().replace("file: tiny_chat_weekly_v1.jsonl", f"file: {file!r}"))
    with pytest.raises(EvalSetError, match=r"tiny_chat_weekly_v1\.yaml: file: .*outside the eval set's folder"):
        load_evalset(config)


HOSTILE_LINES: dict[str, bytes] = {
    "not utf-8": b'{"id": "caf\xe9"}',
    "top list": b"[1, 2]",
    "top string": b'"text"',
    "top number": b"42",
    "top null": b"null",
    "NaN": b'{"id": NaN}',
    "duplicate key": b'{"id": "a", "id": "b", "category": "copy", "prompt": "p", "reference": "r", '
                     b'"scorer": "exact_match"}',
    "deep nesting": b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "not json": b"{id: 1}",
    "huge integer": b'{"id": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("label", sorted(HOSTILE_LINES))
def test_evalset_hostile_line_names_file_and_line(tmp_path: Path, label: str) -> None:
    config = _evalset_dir(tmp_path)
    data = tmp_path / "tiny_chat_weekly_v1.jsonl"
    lines = data.read_bytes().splitlines()
    lines[2] = HOSTILE_LINES[label]
    data.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(EvalSetError, match=r"tiny_chat_weekly_v1\.jsonl:3: .*fix"):
        load_evalset(config)


def test_evalset_every_item_field_wrong(tmp_path: Path) -> None:
    config = _evalset_dir(tmp_path)
    data = tmp_path / "tiny_chat_weekly_v1.jsonl"
    lines = data.read_text().splitlines()
    item = {**json.loads(lines[0]), "messages": [{"role": "user", "content": "hi"}]}
    del item["prompt"]
    for _label, mutated in _mutations(item):
        # NaN/Infinity are written as JSON extensions on purpose: the loader must refuse them.
        data.write_text("\n".join([json.dumps(mutated), *lines[1:]]) + "\n")
        _assert_refused_or_loaded(lambda: load_evalset(config), EvalSetError, ["tiny_chat_weekly_v1.jsonl:1"])


# --- workload matrices ------------------------------------------------------------------------------------------

def _matrix_dir(tmp_path: Path) -> Path:
    shutil.copy(INCLUDE / "benchmarks" / "h100x1.yaml", tmp_path / "h100x1.yaml")
    return tmp_path / "h100x1.yaml"


@pytest.mark.parametrize("label", sorted(HOSTILE_TEXT))
def test_workload_matrix_hostile_text(tmp_path: Path, label: str) -> None:
    _matrix_dir(tmp_path).write_bytes(HOSTILE_TEXT[label])
    with pytest.raises(WorkloadError, match=r"h100x1\.yaml: "):
        load_matrix("h100x1", tmp_path)


def test_workload_matrix_every_field_wrong(tmp_path: Path) -> None:
    path = _matrix_dir(tmp_path)
    doc = yaml.safe_load(path.read_text())
    for _label, mutated in _mutations(doc):
        path.write_text(yaml.safe_dump(mutated))
        _assert_refused_or_loaded(lambda: load_matrix("h100x1", tmp_path), WorkloadError, ["h100x1.yaml"])


def test_workload_from_dict_every_field_wrong() -> None:
    good = Workload(input_len=8, output_len=8, request_rate=1.0, max_concurrency=1, num_prompts=2).to_dict()
    for _label, mutated in _mutations(good):
        _assert_refused_or_loaded(lambda m=mutated: Workload.from_dict(m), WorkloadError, ["--workloads"])
    for bad in ([], "x", None, 3):
        _assert_refused_or_loaded(lambda b=bad: Workload.from_dict(b), WorkloadError, ["--workloads"])


# --- corpus configuration ---------------------------------------------------------------------------------------

def _corpus_dir(tmp_path: Path) -> Path:
    shutil.copytree(INCLUDE / "corpus", tmp_path / "corpus")
    return tmp_path / "corpus"


CORPUS_LOADERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "taxonomy": ("taxonomy.yaml", lambda d: load_taxonomy(d / "taxonomy.yaml")),
    "parser": ("parsers/v1.yaml", lambda d: load_parser_config("v1", d)),
    "suite": ("expectations.json", lambda d: load_suite_dict(load_taxonomy(INCLUDE / "corpus" / "taxonomy.yaml"),
                                                             load_parser_config("v1").chunking,
                                                             d / "expectations.json")),
}


@pytest.mark.parametrize("loader", sorted(CORPUS_LOADERS))
@pytest.mark.parametrize("label", sorted(HOSTILE_TEXT))
def test_corpus_config_hostile_text(tmp_path: Path, loader: str, label: str) -> None:
    folder = _corpus_dir(tmp_path)
    name, load = CORPUS_LOADERS[loader]
    (folder / name).write_bytes(HOSTILE_TEXT[label])
    with pytest.raises(CorpusConfigError, match=Path(name).name.replace(".", r"\.")):
        load(folder)


@pytest.mark.parametrize("loader", sorted(CORPUS_LOADERS))
def test_corpus_config_every_field_wrong(tmp_path: Path, loader: str) -> None:
    folder = _corpus_dir(tmp_path)
    name, load = CORPUS_LOADERS[loader]
    path = folder / name
    doc = json.loads(path.read_text()) if name.endswith(".json") else yaml.safe_load(path.read_text())
    for _label, mutated in _mutations(doc):
        path.write_text(json.dumps(mutated) if name.endswith(".json") else yaml.safe_dump(mutated))
        _assert_refused_or_loaded(lambda: load(folder), CorpusConfigError, [Path(name).name])


# --- manifests --------------------------------------------------------------------------------------------------

URI = "s3://drops/tiny-chat/r1/manifest.json"
GOOD_MANIFEST = {
    "model": "tiny-chat", "model_family": "llama", "source": "run-1", "revision": "r1",
    "runtime_image": "vllm/vllm-openai@sha256:" + "a" * 64, "created_at": "2026-11-23T12:00:00Z",
    "files": [{"path": "model.safetensors", "size": 10, "sha256": "b" * 64},
              {"path": "config.json", "size": 2, "sha256": "c" * 64}],
}
HOSTILE_JSON: dict[str, bytes] = {
    **{label: body for label, body in HOSTILE_TEXT.items() if label not in ("python tag", "tab indentation")},
    "NaN": b'{"model": NaN}',
    "Infinity": b'{"files": [{"size": Infinity}]}',
    "1e999": b'{"files": [{"size": 1e999}]}',
    "duplicate json key": json.dumps(GOOD_MANIFEST).replace('"model": "tiny-chat"',
                                                            '"model": "tiny-chat", "model": "other"').encode(),
    "json deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("label", sorted(HOSTILE_JSON))
def test_drop_manifest_hostile_bytes(label: str) -> None:
    with pytest.raises(ManifestError, match=URI.replace(".", r"\.")):
        load_drop_manifest(HOSTILE_JSON[label], URI)


def test_drop_manifest_every_field_wrong() -> None:
    assert load_drop_manifest(json.dumps(GOOD_MANIFEST).encode(), URI).model == "tiny-chat"
    for _label, mutated in _mutations(GOOD_MANIFEST):
        _assert_refused_or_loaded(lambda m=mutated: load_drop_manifest(json.dumps(m).encode(), URI), ManifestError,
                                  [URI])
        _assert_refused_or_loaded(lambda m=mutated: parse_drop_manifest(m, URI), ManifestError, [URI])


def test_deployment_manifest_every_field_wrong() -> None:
    good = {"model_name": "tiny-chat", "weight_digest": "a" * 64, "weights_uri": "s3://models/x/",
            "runtime_image": "vllm/vllm-openai@sha256:" + "b" * 64, "runtime_version": "0.11.0",
            "hardware_configs": {"cpu": "c" * 64}, "tokenizer_hash": "d" * 64, "chat_template_hash": "e" * 64,
            "created_at": "2026-11-23T12:00:00Z", "model_version": "3", "source_drop": None, "schema_version": 1}
    assert DeploymentManifest.from_json(json.dumps(good).encode(), URI).model_name == "tiny-chat"
    for _label, mutated in _mutations(good):
        _assert_refused_or_loaded(lambda m=mutated: DeploymentManifest.from_json(json.dumps(m).encode(), URI),
                                  ManifestError, [URI])
    for body in HOSTILE_JSON.values():
        _assert_refused_or_loaded(lambda b=body: DeploymentManifest.from_json(b, URI), ManifestError, [URI])


def test_deployment_manifest_refuses_true_as_schema_version() -> None:
    with pytest.raises(ManifestError, match="schema_version"):
        DeploymentManifest.from_dict({"schema_version": True}, URI)


# --- the refresh lease ------------------------------------------------------------------------------------------

class _Body:
    def __init__(self, data: bytes) -> None:
        self.data, self.read_sizes = data, []

    def read(self, size: int = -1) -> bytes:
        self.read_sizes.append(size)
        chunk, self.data = (self.data, b"") if size < 0 else (self.data[:size], self.data[size:])
        return chunk


class _S3:
    """Only get_object: the lease object's body (a stand-in; the S3 round trip is in test_model_lock)."""

    def __init__(self, body: bytes, content_length: int | None = None) -> None:
        self.body = _Body(body)
        self.content_length = len(body) if content_length is None else content_length

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # boto3's parameter names
        return {"Body": self.body, "ETag": '"e"', "ContentLength": self.content_length}


LEASE_URI = "s3://models/locks/model_refresh/tiny-chat.json"


@pytest.mark.parametrize("label", sorted(HOSTILE_JSON))
def test_lease_hostile_bytes(label: str) -> None:
    with pytest.raises(LeaseError, match=LEASE_URI.replace(".", r"\.") + r": .*fix: .*delete"):
        read_lease(_S3(HOSTILE_JSON[label]), "models", "tiny-chat")


def test_lease_every_field_wrong() -> None:
    good = {"run_id": "manual__1", "acquired_at": "2026-11-23T12:00:00+00:00", "took_over_from": "manual__0"}
    assert read_lease(_S3(json.dumps(good).encode()), "models", "tiny-chat").run_id == "manual__1"
    for _label, mutated in _mutations(good):
        _assert_refused_or_loaded(lambda m=mutated: read_lease(_S3(json.dumps(m).encode()), "models", "tiny-chat"),
                                  LeaseError, [LEASE_URI])
