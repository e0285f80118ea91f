"""The pin is the truth: every pod serving a version runs that version's pinned runtime, never the
platform's default image, and only runtimes on ``include/runtimes.yaml`` may be pinned at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmops.benchmarks import config as bench_config
from llmops.benchmarks import nightly
from llmops.canary.plan import canary_pod_job, canary_pool_kwargs
from llmops.config import settings as settings_mod
from llmops.core.fields import DocumentError
from llmops.core.hardware import config_path, hardware_pin_problem, load_hardware_class
from llmops.core.runtimes import RuntimeNotAllowed, load_runtimes, verdict_key
from llmops.io.registry import RegisteredVersion
from llmops.refresh.plan import candidate_target, qualification_jobs
from llmops.serving.weights import UnpinnedVersionError, target_hardware_pins, version_target

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_A = "docker.io/vllm/vllm-openai@sha256:" + "a" * 64
RUNTIME_C = "docker.io/vllm/vllm-openai@sha256:" + "c" * 64
DEFAULT_B = "docker.io/vllm/vllm-openai@sha256:" + "b" * 64  # the platform default: must never serve a version
JOBS = "ghcr.io/llmops-lifecycle/llmops-jobs@sha256:" + "d" * 64
DIGEST = "ab" * 32


@pytest.fixture
def settings() -> settings_mod.Settings:
    return settings_mod.load({"LLMOPS_LAUNCHER": "local", "LLMOPS_VLLM_IMAGE": DEFAULT_B, "LLMOPS_JOBS_IMAGE": JOBS})


def _version(version: str, image: str | None, **extra: str) -> RegisteredVersion:
    tags = {"pin.weight_digest": DIGEST, "pin.runtime_version": "0.32.0", **extra}
    if image:
        tags["pin.runtime_image"] = image
    return RegisteredVersion(name="tiny-chat", version=version, source=f"s3://models/tiny-chat/sha256-{DIGEST}/",
                             tags=tags, aliases=())


def _images(job: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["image"] for c in [*job.get("sidecars", []), *job.get("init_containers", []), job["main"]]}


# -- the allowlist ----------------------------------------------------------------------------------


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "runtimes.yaml"
    path.write_text(body)
    return path


def test_the_shipped_allowlist_lists_the_embedded_runtime_as_built_now() -> None:
    from llmops.embedded.platform import EmbeddedPlatform

    image = EmbeddedPlatform.local_images(None)["LLMOPS_VLLM_IMAGE"]  # type: ignore[arg-type]
    runtime = load_runtimes(ROOT / "include" / "runtimes.yaml").find(image)
    assert runtime is not None, (f"include/runtimes.yaml does not list the embedded runtime {image}: "
                                 "requirements-vllm.lock or setup-vllm-env.sh changed; add the new digest")
    assert runtime.accelerator == "cpu" and runtime.vllm_version.startswith("0.32.0")


@pytest.mark.parametrize(("body", "field", "fix"), [
    ("runtimes: []\n", "schema_version", "schema_version: 1"),
    ("schema_version: 1\nruntimes: {}\n", "runtimes", "list the allowed runtimes"),
    ("schema_version: 1\nruntimes:\n  - image: vllm/vllm-openai:v0.32.0\n    vllm_version: '0.32.0'\n"
     "    accelerator: cpu\n", "runtimes[0].image", "repo@sha256"),
    (f"schema_version: 1\nruntimes:\n  - image: {RUNTIME_A}\n    vllm_version: '0.32.0'\n    accelerator: cuda\n",
     "runtimes[0].cuda", "CUDA version"),
    (f"schema_version: 1\nruntimes:\n  - image: {RUNTIME_A}\n    vllm_version: '0.32.0'\n    accelerator: tpu\n",
     "runtimes[0].accelerator", "one of"),
    (f"schema_version: 1\nruntimes:\n  - image: {RUNTIME_A}\n    vllm_version: '0.32.0'\n    accelerator: cpu\n"
     "    dtype: float32\n", "runtimes[0].dtype", "remove it"),
    (f"schema_version: 1\nruntimes:\n  - image: {RUNTIME_A}\n    vllm_version: 0.32\n    accelerator: cpu\n",
     "runtimes[0].vllm_version", "vLLM version"),
    (f"schema_version: 1\nruntimes:\n  - {{image: {RUNTIME_A}, vllm_version: '1', accelerator: cpu}}\n"
     f"  - {{image: {RUNTIME_A}, vllm_version: '1', accelerator: cpu}}\n", "runtimes[1].image", "one entry per image"),
    ("- just a list\n", "(file)", "schema_version"),
])
def test_a_malformed_allowlist_names_file_field_and_fix(tmp_path: Path, body: str, field: str, fix: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(DocumentError) as raised:
        load_runtimes(path)
    assert raised.value.field == field and str(path) in str(raised.value) and fix in raised.value.fix


def test_a_missing_allowlist_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="LLMOPS_RUNTIMES_FILE"):
        load_runtimes(tmp_path / "absent.yaml")


def test_an_unlisted_or_rejected_runtime_is_refused_with_the_fix(tmp_path: Path) -> None:
    allowlist = load_runtimes(_write(tmp_path, f"schema_version: 1\nruntimes:\n  - image: {RUNTIME_A}\n"
                                               "    vllm_version: '0.32.0'\n    accelerator: cuda\n"
                                               "    cuda: '12.8'\n    driver: '570.133.20'\n"))
    assert allowlist.require(RUNTIME_A).cuda == "12.8"
    with pytest.raises(RuntimeNotAllowed, match=r"not on the runtime allowlist.*republish the drop pinned to an "
                                                r"allowed runtime.*runtime_requalify"):
        allowlist.require(RUNTIME_C)
    with pytest.raises(RuntimeNotAllowed, match="not pinned by digest"):
        allowlist.require("vllm/vllm-openai:latest")
    with pytest.raises(RuntimeNotAllowed, match="categories that changed: json, reverse"):
        allowlist.require(RUNTIME_A, rejected={"status": "rejected", "changed_categories": ["json", "reverse"]})


def test_a_driver_bump_is_a_new_runtime_identity(tmp_path: Path) -> None:
    def runtime(driver: str):
        return load_runtimes(_write(tmp_path, f"schema_version: 1\nruntimes:\n  - image: {RUNTIME_A}\n"
                                              "    vllm_version: '0.32.0'\n    accelerator: cuda\n"
                                              f"    cuda: '12.8'\n    driver: '{driver}'\n")).runtimes[0]

    old, new = runtime("570.133.20"), runtime("575.51.03")
    assert old.identity != new.identity and verdict_key(old) != verdict_key(new)
    assert verdict_key(old).startswith(f"runtimes/{'a' * 64}/")
    assert new.tags()["runtime_driver"] == "575.51.03" and new.tags()["runtime_image_digest"] == f"sha256:{'a' * 64}"


# -- every serving pod runs the pin -------------------------------------------------------------------


def test_a_registered_version_serves_on_its_pinned_runtime() -> None:
    target = version_target("champion", _version("3", RUNTIME_A, **{"pin.hardware_config.cpu": "f" * 64}))
    assert target["runtime_image"] == RUNTIME_A and target["hardware_config.cpu"] == "f" * 64
    with pytest.raises(UnpinnedVersionError, match=r"version 4 has no pin.runtime_image tag.*fix: refresh"):
        version_target("champion", _version("4", None))


def test_a_version_serves_only_on_the_class_config_it_was_qualified_on(settings: settings_mod.Settings) -> None:
    cpu = load_hardware_class("cpu", settings.hardware_configs_dir)
    h100 = load_hardware_class("h100x1", settings.hardware_configs_dir)
    target = {"version": "3", "hardware_config.cpu": cpu.config_hash}
    pins = target_hardware_pins(target)
    assert pins == {"cpu": cpu.config_hash}
    assert hardware_pin_problem(pins, cpu, config_path("cpu", settings.hardware_configs_dir)) is None
    never = hardware_pin_problem(pins, h100, config_path("h100x1", settings.hardware_configs_dir)) or ""
    assert "no entry for class 'h100x1' (it pins cpu)" in never and "qualify the version on 'h100x1'" in never
    changed = cpu.model_copy(update={"vllm": cpu.vllm.model_copy(update={"max_num_seqs": 3})})
    problem = hardware_pin_problem(pins, changed, config_path("cpu", settings.hardware_configs_dir)) or ""
    assert problem.startswith(f"include/hardware_configs/cpu.yaml: config hash {changed.config_hash} differs")
    assert "re-qualify the version on the changed class" in problem


def test_qualification_serves_each_target_on_its_own_pin_never_the_platform_default(
        settings: settings_mod.Settings) -> None:
    hw = load_hardware_class("cpu", settings.hardware_configs_dir)
    candidate = candidate_target({"model_version": 5, "weights_uri": "s3://m/w/", "weight_digest": DIGEST,
                                  "runtime_image": RUNTIME_A, "runtime_version": "0.33.0",
                                  "hardware_configs": {"cpu": hw.config_hash}})
    champion = version_target("champion", _version("3", RUNTIME_C))
    jobs = qualification_jobs(settings, hw, model="tiny-chat", targets=[candidate, champion],
                              evalset_config="include/evalsets/synthetic_chat_v1.yaml", s3_endpoint=None,
                              tracking_uri="http://mlflow")
    assert [_images(job)["vllm"] for job in jobs] == [RUNTIME_A, RUNTIME_C]
    tags = [{job["main"]["args"][i + 1] for i, a in enumerate(job["main"]["args"]) if a == "--tag"} for job in jobs]
    assert {f"runtime_image={RUNTIME_A}", "runtime_version=0.33.0",
            f"pinned_hardware_config_hash={hw.config_hash}"} <= tags[0]
    assert {f"runtime_image={RUNTIME_C}", "runtime_version=0.32.0", "pinned_hardware_config_hash=none"} <= tags[1]


def test_the_canary_serves_stable_and_canary_on_their_own_pins(settings: settings_mod.Settings) -> None:
    hw = load_hardware_class("cpu", settings.hardware_configs_dir)
    job = canary_pod_job(settings, hw, stable_model_path="/m/a", canary_model_path="/m/b", served_model_name="m",
                         spec={"steps": [{"weight": 50, "window_s": 5}]}, stable_image=RUNTIME_C,
                         canary_image=RUNTIME_A)
    images = _images(job.to_dict())
    assert (images["vllm-stable"], images["vllm-canary"]) == (RUNTIME_C, RUNTIME_A)
    assert DEFAULT_B not in images.values()


def test_benchmarks_run_a_registered_version_on_its_pin(settings: settings_mod.Settings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    champion, challenger = _version("3", RUNTIME_C), _version("4", RUNTIME_A)
    challenger = RegisteredVersion(name="tiny-chat", version="4", source="s3://models/tiny-chat/sha256-" + "cd" * 32,
                                   tags={**challenger.tags, "pin.weight_digest": "cd" * 32}, aliases=())

    class Registry:
        def __init__(self, *_: Any) -> None:
            pass

        def by_alias(self, _model: str, alias: str) -> RegisteredVersion | None:
            return {"champion": champion, "challenger": challenger}.get(alias)

    monkeypatch.setattr(nightly.registry, "ModelRegistry", Registry)
    bench = bench_config.load({})
    planned = nightly.plan_night(settings, bench, classes=["cpu"], model="tiny-chat", include_challenger=True,
                                 vllm_overrides=[], tracking_uri="http://mlflow", s3_endpoint=None,
                                 groups=[nightly.plan.pool_group(load_hardware_class("cpu",
                                                                                     settings.hardware_configs_dir))])
    jobs = [job for key, value in planned.items() if key.startswith("jobs") for job in value]
    images = sorted(container["image"] for job in jobs for container in job["sidecars"])
    assert images == sorted([RUNTIME_A, RUNTIME_C])


# -- the canary's pool slots are the GPUs it requests ----------------------------------------------


def test_canary_pool_slots_count_both_servers_gpus(settings: settings_mod.Settings) -> None:
    cpu = load_hardware_class("cpu", settings.hardware_configs_dir)
    h100 = load_hardware_class("h100x1", settings.hardware_configs_dir)
    assert canary_pool_kwargs(cpu, "nginx") == {"pool": cpu.pool.name, "pool_slots": 1}  # a one-slot CPU pool runs it
    assert canary_pool_kwargs(h100, "nginx") == {"pool": h100.pool.name, "pool_slots": 2}
    assert canary_pool_kwargs(h100, "gateway") == {}  # the controller alone: no GPU
    small = h100.model_copy(update={"pool": h100.pool.model_copy(update={"slots": 1})})
    with pytest.raises(ValueError, match=r"pool.slots is 1, but the canary pod requests 2 GPUs"):
        canary_pool_kwargs(small, "nginx")


def test_a_registered_versions_benchmark_run_is_tagged_runtime_pinned() -> None:
    from llmops.benchmarks.recording import run_tags

    entry = {"name": "chat", "workload_hash": "w" * 64, "status": "ok"}
    result = {"hardware_class": "cpu", "config_hash": "c" * 64, "runtime_version": "0.32.0", "runtime_image": RUNTIME_A}
    pinned = run_tags({**result, "target": {"role": "champion", "runtime_image": RUNTIME_A}}, entry,
                      airflow_run_id="r", trigger="schedule")
    default = run_tags({**result, "target": {"role": "default"}}, entry, airflow_run_id="r", trigger="schedule")
    assert (pinned["llmops.runtime_pinned"], default["llmops.runtime_pinned"]) == ("true", "false")
