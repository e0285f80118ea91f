"""A registered version as the stage job leaves it, without copying weights: tests of promote,
rollback and serving need its pins (registry tags) and its ``deployment.json`` beside the weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmops.config import settings as settings_mod
from llmops.core.deployment import DeploymentManifest
from llmops.core.hardware import load_hardware_class
from llmops.io import registry
from llmops.io import s3 as s3io


def stage_version(reg: registry.ModelRegistry, s3: Any, bucket: str, model: str, digest: str, image: str, *,
                  hardware_classes: Sequence[str] = ("cpu",), hardware_hashes: dict[str, str] | None = None,
                  runtime_version: str = "0.32.0") -> str:
    """Register ``model`` at ``s3://<bucket>/models/<model>/sha256-<digest>/`` pinned to ``image`` and
    the current config of ``hardware_classes`` (or ``hardware_hashes``), write its deployment.json;
    return the version."""
    configs_dir = settings_mod.load().hardware_configs_dir
    hashes = hardware_hashes or {name: load_hardware_class(name, configs_dir).config_hash for name in hardware_classes}
    weights = f"s3://{bucket}/models/{model}/sha256-{digest}/"
    manifest = DeploymentManifest(
        model_name=model, weight_digest=digest, weights_uri=weights, runtime_image=image,
        runtime_version=runtime_version, hardware_configs=hashes, tokenizer_hash="cd" * 32,
        chat_template_hash="ef" * 32, created_at="2026-11-30T10:00:00+00:00")
    version, _ = reg.register(model, source=weights, pins=manifest.pins())
    s3io.write_json(s3, bucket, f"models/{model}/sha256-{digest}/deployment.json",
                    manifest.with_version(version.version).to_dict())
    return version.version
