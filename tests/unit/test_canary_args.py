"""canary_vllm_args may tune the canary server, never change what it serves or how it is reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.canary.plan import canary_pod_job
from llmops.config import settings as settings_mod
from llmops.core import limits
from llmops.core.hardware import KNOB_FLAGS, load_all, load_hardware_class
from llmops.serving.vllm import vllm_sidecar
from llmops.serving.vllm_args import MANAGED_VLLM_FLAGS, VllmArgsError, managed_flags, override_args

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "include" / "hardware_configs"
BASE = ("/models/m", "--served-model-name", "m", "--port", "$(CANARY_PORT)", "--max-model-len", "512")
SPEC = {"steps": [{"weight": 50, "window_s": 5}]}


@pytest.mark.parametrize("extra", [
    ["--model", "/models/other"], ["--model=/models/other"], ["--served-model-name", "x"],
    ["--served_model_name=x"], ["--port", "9"], ["--host", "0.0.0.0"], ["--tensor-parallel-size", "8"],
    ["-tp", "8"], ["-tp=8"], ["--pipeline-parallel-size", "2"], ["--pipeline_parallel_size=2"],
    ["--api-key", "k"], ["--download-dir", "/tmp"], ["--load-format", "dummy"], ["--trust-remote-code"],
    ["--trust_remote_code"], ["--tokenizer", "/models/t"], ["--revision", "main"], ["--disable-log-requests"],
    ["--enable-log-requests"], ["--seed", "1", "--load-format=dummy"], ["--tok", "/x"],  # an abbreviation
    ["--chat-template", "/x.jinja"], ["--middleware", "evil.mod"], ["--config", "/x.yaml"],
])
def test_managed_flags_are_refused_in_every_spelling(extra: list[str]) -> None:
    with pytest.raises(VllmArgsError, match=r"canary_extra_args: .* is managed by the platform: .*; fix: remove it"):
        override_args(BASE, extra)

IMAGES = {"stable_image": "docker.io/vllm/vllm-openai@sha256:" + "a" * 64,
          "canary_image": "docker.io/vllm/vllm-openai@sha256:" + "a" * 64}


def test_tuning_flags_are_still_overridable() -> None:
    assert override_args(BASE, ["--max-model-len", "16", "--enforce-eager", "--max-num-seqs=2"]) == (
        *BASE[:-1], "16", "--enforce-eager", "--max-num-seqs", "2")


@pytest.mark.parametrize(("extra", "message"), [
    (["--seed"] * (limits.VLLM_EXTRA_ARGS_MAX + 1), r"65 tokens, over the limit of 64 .*VLLM_EXTRA_ARGS_MAX"),
    (["--seed", "1" * (limits.VLLM_EXTRA_ARG_MAX_CHARS + 1)], r"canary_extra_args\[1\]: 1025 characters"),
    (["--seed", 1], r"canary_extra_args\[1\]: expected a string, got 1"),
    ("--seed 1", r"expected a list of strings"),
    (["16"], r"'16' is not a flag"),
])
def test_extra_args_are_bounded_and_typed(extra: object, message: str) -> None:
    with pytest.raises(VllmArgsError, match=message):
        override_args(BASE, extra)  # type: ignore[arg-type]


def test_every_flag_the_sidecar_sets_is_managed_or_a_knob_of_the_class() -> None:
    """A flag the launcher starts to set later is refused without being listed by hand."""
    for hw in load_all(CONFIGS).values():
        args = vllm_sidecar(hw, "/models/m", "m", "vllm@sha256:" + "a" * 64).args
        managed = managed_flags(args, hw)
        class_flags = {a.split("=", 1)[0] for a in hw.vllm.extra_args if a.startswith("-")}
        for flag in (a.split("=", 1)[0] for a in args if a.startswith("-")):
            assert flag in managed or flag in KNOB_FLAGS or flag in class_flags, (hw.name, flag)
        assert {"--served-model-name", "--port", "--tensor-parallel-size"} <= set(managed)
        assert not set(KNOB_FLAGS) & set(managed)


def test_a_flag_the_sidecar_sets_is_derived_as_managed() -> None:
    hw = load_hardware_class("cpu", CONFIGS)
    managed = managed_flags((*BASE, "--uds-new-thing", "/x"), hw)
    assert "--uds-new-thing" in managed and "--uds-new-thing" not in MANAGED_VLLM_FLAGS
    with pytest.raises(VllmArgsError, match="--uds-new-thing"):
        override_args(BASE, ["--uds-new-thing", "/y"], managed=managed)


def test_canary_pod_job_refuses_a_managed_flag() -> None:
    settings = settings_mod.load({})
    hw = load_hardware_class("cpu", settings.hardware_configs_dir)
    with pytest.raises(ValueError, match=r"--served-model-name.*managed by the platform"):
        canary_pod_job(settings, hw, stable_model_path="/m/a", canary_model_path="/m/b", served_model_name="m",
                       spec=SPEC, canary_extra_args=["--served-model-name", "other"], **IMAGES)
    job = canary_pod_job(settings, hw, stable_model_path="/m/a", canary_model_path="/m/b", served_model_name="m",
                         spec=SPEC, canary_extra_args=["--max-model-len", "16"], **IMAGES)
    canary = job.sidecars[1]
    assert canary.args[canary.args.index("--max-model-len") + 1] == "16"
