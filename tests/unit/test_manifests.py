"""Weight-drop and deployment manifests, weight digest, tokenizer and chat-template hashes (pure)."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from llmops.core.deployment import DeploymentManifest, chat_template_hash, tokenizer_hash
from llmops.core.manifests import ManifestError, ManifestFile, parse_drop_manifest, path_problem, weight_digest

URI = "s3://llmops-drops/tiny-chat/r1/manifest.json"
IMAGE = "docker.io/vllm/vllm-openai@sha256:" + "a" * 64


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": "tiny-chat",
        "model_family": "llama",
        "source": "modelmaker:good",
        "revision": "r1",
        "runtime_image": IMAGE,
        "created_at": "2026-11-23T12:00:00Z",
        "files": [
            {"path": "config.json", "size": 10, "sha256": _sha("config")},
            {"path": "model.safetensors", "size": 2048, "sha256": _sha("weights")},
            {"path": "tok/tokenizer.json", "size": 5, "sha256": _sha("tok")},
        ],
    }
    data.update(overrides)
    return data


def _error(data: Any, **kwargs: Any) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_drop_manifest(data, URI, **kwargs)
    return info.value


def _fields(error: ManifestError) -> list[str]:
    return [field for field, _, _ in error.problems]


# ---------------------------------------------------------------------------------------------
# Weight-drop manifest


def test_a_good_manifest_parses_and_round_trips() -> None:
    manifest = parse_drop_manifest(_manifest(), URI, expect_model="tiny-chat", expect_revision="r1")
    assert manifest.model == "tiny-chat" and manifest.revision == "r1"
    assert [f.path for f in manifest.files] == ["config.json", "model.safetensors", "tok/tokenizer.json"]
    assert manifest.total_size == 2063
    assert manifest.uri == URI
    assert parse_drop_manifest(manifest.to_dict(), URI) == manifest


def test_not_an_object() -> None:
    error = _error([1, 2])
    assert _fields(error) == ["$"]
    assert URI in str(error) and "array" in str(error)


@pytest.mark.parametrize("name", ["model", "model_family", "source", "revision", "runtime_image", "created_at",
                                  "files"])
def test_each_required_field_is_named_when_missing(name: str) -> None:
    data = _manifest()
    del data[name]
    error = _error(data)
    assert _fields(error) == [name]
    assert str(error).startswith(f"{URI}: {name}: is missing; fix: add")


def test_unknown_field_is_named_with_the_fix() -> None:
    error = _error(_manifest(fiels=[]))
    assert _fields(error) == ["fiels"]
    assert "rename it to one of" in str(error)


def test_every_problem_is_collected_in_one_error() -> None:
    data = _manifest(runtime_image="vllm/vllm-openai:latest", created_at="yesterday")
    data["files"][1]["sha256"] = "xyz"
    data["files"][2]["size"] = -1
    error = _error(data)
    assert _fields(error) == ["runtime_image", "created_at", "files[1].sha256", "files[2].size"]
    assert "4 problems" in str(error)
    assert error.to_dict()["manifest"] == URI
    assert [p["field"] for p in error.to_dict()["problems"]] == _fields(error)


def test_runtime_image_must_be_pinned_by_digest() -> None:
    for image in ("vllm/vllm-openai:v0.32.0", "vllm/vllm-openai@sha256:" + "A" * 64, "repo@sha256:abc"):
        error = _error(_manifest(runtime_image=image))
        assert _fields(error) == ["runtime_image"]
        assert "repo@sha256:<64 lowercase hex>" in str(error)


@pytest.mark.parametrize("value", ["2026-11-23", "2026-11-23T12:00:00", "not a time"])
def test_created_at_needs_a_time_zone(value: str) -> None:
    assert _fields(_error(_manifest(created_at=value))) == ["created_at"]


@pytest.mark.parametrize("value", ["", "   ", 3, None])
def test_string_fields_must_be_non_empty_strings(value: Any) -> None:
    assert _fields(_error(_manifest(source=value))) == ["source"]


@pytest.mark.parametrize("model", ["a/b", "..", "-x", "tiny chat", "x" * 129])
def test_model_and_revision_must_be_path_segments(model: str) -> None:
    assert _fields(_error(_manifest(model=model, revision=model))) == ["model", "revision"]


def test_quarantine_is_not_a_model_name() -> None:
    error = _error(_manifest(model="quarantine"))
    assert _fields(error) == ["model"] and "reserved" in str(error)


def test_location_must_match_model_and_revision() -> None:
    error = _error(_manifest(), expect_model="other", expect_revision="r2")
    assert _fields(error) == ["model", "revision"]
    assert "does not match the drop location ('r2')" in str(error)


@pytest.mark.parametrize("path", ["/abs/file", "a/../b", "../b", "./a", "a//b", "a/", "a\\b", "a\nb", "",
                                  "manifest.json", "_staged.json"])
def test_bad_paths_are_refused(path: str) -> None:
    data = _manifest()
    data["files"][2]["path"] = path
    error = _error(data)
    assert _fields(error) == ["files[2].path"]
    assert "fix:" in str(error)


@pytest.mark.parametrize("path", ["a.bin", "sub/manifest.json", "deep/er/x.safetensors", "naïve/ünïcode.txt",
                                  "with space.json", "..hidden"])
def test_good_paths_are_accepted(path: str) -> None:
    assert path_problem(path) is None


def test_duplicate_paths_name_both_entries() -> None:
    data = _manifest()
    data["files"].append(dict(data["files"][0]))
    error = _error(data)
    assert _fields(error) == ["files[3].path"]
    assert "listed twice (first at files[0])" in str(error)


@pytest.mark.parametrize(("size", "ok"), [(0, True), (10, True), (-1, False), (1.5, False), ("10", False),
                                          (True, False)])
def test_size_is_a_non_negative_integer(size: Any, ok: bool) -> None:
    data = _manifest()
    data["files"][0]["size"] = size
    if ok:
        assert parse_drop_manifest(data, URI).files[0].size == size
    else:
        assert _fields(_error(data)) == ["files[0].size"]


def test_uppercase_sha256_is_refused_with_the_lowercase_fix() -> None:
    data = _manifest()
    data["files"][0]["sha256"] = data["files"][0]["sha256"].upper()
    error = _error(data)
    assert _fields(error) == ["files[0].sha256"]
    assert "write it in lowercase" in str(error)


def test_file_entries_are_strict() -> None:
    data = _manifest()
    data["files"][0]["md5"] = "x"
    data["files"][1] = "model.safetensors"
    del data["files"][2]["sha256"]
    assert _fields(_error(data)) == ["files[0].md5", "files[1]", "files[2].sha256"]


@pytest.mark.parametrize("files", [[], {}, "a.bin"])
def test_files_must_be_a_non_empty_list(files: Any) -> None:
    assert _fields(_error(_manifest(files=files))) == ["files"]


# ---------------------------------------------------------------------------------------------
# Weight digest


def test_weight_digest_is_the_documented_canonical_form() -> None:
    files = [ManifestFile("b.bin", 1, _sha("b")), ManifestFile("a/x.bin", 2, _sha("a"))]
    canonical = f"{_sha('a')}  a/x.bin\n{_sha('b')}  b.bin\n"
    assert weight_digest(files) == hashlib.sha256(canonical.encode()).hexdigest()


def test_weight_digest_ignores_order_sizes_and_drop_metadata() -> None:
    first = parse_drop_manifest(_manifest(), URI)
    data = _manifest(revision="r2", created_at="2027-01-01T00:00:00+02:00", source="elsewhere")
    data["files"] = list(reversed(data["files"]))
    redelivered = parse_drop_manifest(data, URI)
    assert redelivered.weight_digest == first.weight_digest
    assert weight_digest([f.to_dict() for f in first.files]) == first.weight_digest


def test_weight_digest_changes_with_content_or_name() -> None:
    base = parse_drop_manifest(_manifest(), URI).weight_digest
    changed = _manifest()
    changed["files"][1]["sha256"] = _sha("other weights")
    renamed = _manifest()
    renamed["files"][1]["path"] = "model-00001.safetensors"
    fewer = _manifest()
    fewer["files"].pop()
    digests = {base} | {parse_drop_manifest(d, URI).weight_digest for d in (changed, renamed, fewer)}
    assert len(digests) == 4


def test_weight_digest_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        weight_digest([ManifestFile("a", 1, _sha("a")), ManifestFile("a", 1, _sha("b"))])


def test_manifest_file_of_validates_mappings() -> None:
    assert ManifestFile.of({"path": "a", "size": 1, "sha256": _sha("a")}) == ManifestFile("a", 1, _sha("a"))
    with pytest.raises(ManifestError, match=r"file\.sha256"):
        ManifestFile.of({"path": "a", "size": 1, "sha256": "nope"})


# ---------------------------------------------------------------------------------------------
# Tokenizer and chat-template hashes


def _tokenizer_files(**config_overrides: Any) -> dict[str, bytes]:
    config = {"model_max_length": 256, "eos_token": "<|im_end|>", "chat_template": "{{ messages }}",
              **config_overrides}
    return {
        "tokenizer.json": json.dumps({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}).encode(),
        "tokenizer_config.json": json.dumps(config).encode(),
        "special_tokens_map.json": json.dumps({"eos_token": "<|im_end|>"}).encode(),
    }


def test_tokenizer_hash_ignores_formatting_key_order_and_the_chat_template() -> None:
    files = _tokenizer_files()
    reformatted = {name: json.dumps(json.loads(body), indent=4, sort_keys=True).encode()
                   for name, body in files.items()}
    other_template = _tokenizer_files(chat_template="{% for m in messages %}{{ m }}{% endfor %}")
    unrelated = {**files, "config.json": b"{}"}
    assert len({tokenizer_hash(f) for f in (files, reformatted, other_template, unrelated)}) == 1


def test_tokenizer_hash_changes_with_vocabulary_config_or_special_tokens() -> None:
    base = _tokenizer_files()
    vocab = {**base, "tokenizer.json": base["tokenizer.json"].replace(b'"b": 1', b'"c": 1')}
    config = _tokenizer_files(model_max_length=512)
    no_special = {k: v for k, v in base.items() if k != "special_tokens_map.json"}
    assert len({tokenizer_hash(f) for f in (base, vocab, config, no_special)}) == 4


def test_tokenizer_hash_names_missing_and_broken_files() -> None:
    with pytest.raises(ValueError, match="tokenizer.json missing"):
        tokenizer_hash({"tokenizer_config.json": b"{}"})
    with pytest.raises(ValueError, match="tokenizer_config.json is not valid JSON"):
        tokenizer_hash({**_tokenizer_files(), "tokenizer_config.json": b"{nope"})


def test_chat_template_hash_is_over_the_exact_template_string() -> None:
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert chat_template_hash({"chat_template": template}) == _sha(template)
    assert chat_template_hash({"chat_template": template + " "}) != _sha(template)
    assert chat_template_hash({"chat_template": "ignored"}, chat_template_file=template) == _sha(template)
    assert chat_template_hash({}) == hashlib.sha256(b"").hexdigest()


def test_chat_template_hash_of_named_templates_ignores_their_order() -> None:
    named = [{"name": "default", "template": "A"}, {"name": "tool_use", "template": "B"}]
    assert chat_template_hash({"chat_template": named}) == chat_template_hash({"chat_template": named[::-1]})
    with pytest.raises(ValueError, match="chat_template is a number"):
        chat_template_hash({"chat_template": 3})


# ---------------------------------------------------------------------------------------------
# Deployment manifest


def _deployment(**overrides: Any) -> DeploymentManifest:
    values: dict[str, Any] = {
        "model_name": "tiny-chat", "weight_digest": _sha("w"),
        "weights_uri": "s3://llmops-models/models/tiny-chat/sha256-" + _sha("w") + "/",
        "runtime_image": IMAGE, "runtime_version": "0.32.0",
        "hardware_configs": {"cpu": _sha("cpu"), "h100x1": _sha("h100")},
        "tokenizer_hash": _sha("t"), "chat_template_hash": _sha("c"), "created_at": "2026-11-23T12:00:00+00:00",
        "source_drop": "s3://llmops-drops/tiny-chat/r1/",
    }
    values.update(overrides)
    return DeploymentManifest(**values)


def test_deployment_manifest_round_trips_through_json() -> None:
    manifest = _deployment().with_version(3)
    assert manifest.model_version == "3"
    data = json.loads(json.dumps(manifest.to_dict()))
    assert data["schema_version"] == 1
    assert DeploymentManifest.from_dict(data) == manifest
    assert manifest.runtime_image_digest == "sha256:" + "a" * 64


def test_deployment_pins_are_flat_strings() -> None:
    pins = _deployment().pins()
    assert pins["weight_digest"] == _sha("w")
    assert pins["hardware_config.h100x1"] == _sha("h100")
    assert pins["runtime_image_digest"].startswith("sha256:")
    assert all(isinstance(v, str) for v in pins.values())


def test_deployment_manifest_refuses_unpinned_values() -> None:
    with pytest.raises(ManifestError) as info:
        _deployment(runtime_image="vllm:latest", weight_digest="abc", hardware_configs={"cpu": "x"})
    assert _fields(info.value) == ["weight_digest", "runtime_image", "hardware_configs.cpu"]


def test_deployment_from_dict_names_the_uri_and_fields() -> None:
    data = _deployment().to_dict()
    broken = copy.deepcopy(data)
    del broken["tokenizer_hash"]
    broken["schema_version"] = 2
    broken["extra"] = 1
    with pytest.raises(ManifestError) as info:
        DeploymentManifest.from_dict(broken, uri="s3://llmops-models/deployments/tiny-chat/current.json")
    assert _fields(info.value) == ["extra", "tokenizer_hash", "schema_version"]
    assert str(info.value).startswith("s3://llmops-models/deployments/tiny-chat/current.json: 3 problems")
    with pytest.raises(ManifestError, match=r"\$: is a JSON array"):
        DeploymentManifest.from_dict([])
