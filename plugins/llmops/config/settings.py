"""One place for configuration: environment variables with embedded defaults.

Everything that differs between the embedded default and production (launcher,
images, endpoints, data folders) is read here and nowhere else, so production
swaps them by configuration, never by a code edit. Reading is cheap (no Airflow
or network access), so DAG files may call :func:`load` at parse time.

Connections (S3, MLflow, Kubernetes) are Airflow connections, declared in
``airflow_settings.yaml``; pod jobs receive their values through Jinja templates
rendered at run time, not through this module.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llmops.core.podjob import image_repository

PROJECT_ROOT = Path(__file__).resolve().parents[3]

Launcher = Literal["local", "kubernetes"]
LAUNCHERS: tuple[str, ...] = ("local", "kubernetes")
CANARY_ROUTERS: tuple[str, ...] = ("nginx", "gateway")

# Images the pod jobs run. Production must set digest-pinned references
# (repo@sha256:...); the kubernetes launcher refuses anything else. The embedded
# default maps each image repository to a local runtime (see local_runtimes).
DEFAULT_JOBS_IMAGE = "ghcr.io/llmops-lifecycle/llmops-jobs:0.1.0"
DEFAULT_VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.32.0"


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one process."""

    launcher: Launcher
    data_dir: Path
    jobs_image: str
    vllm_image: str
    vllm_version: str | None
    vllm_venv: Path
    hardware_configs_dir: Path
    evalsets_dir: Path
    namespace: str
    service_account: str
    default_hardware_class: str
    refresh_hardware_classes: tuple[str, ...]
    drop_poll_interval_s: float
    canary_window_s: int
    local_runtimes: dict[str, Path] = field(default_factory=dict)
    # How canary traffic is split: "nginx" (a proxy inside the canary pod, the embedded default)
    # or "gateway" (a model's long-lived HTTPRoute and Deployments; see llmops.serving.deployments).
    canary_router: str = "nginx"
    # Where clients reach a model's HTTPRoute ({model} and {namespace} are filled in).
    gateway_url_template: str = "http://llmops-gateway.{namespace}.svc.cluster.local"

    @property
    def models_dir(self) -> Path:
        """Where the model maker writes its checkpoints (the embedded model cache)."""
        return Path(os.environ.get("LLMOPS_MODELS_DIR", self.data_dir / "models"))

    @property
    def secrets_dir(self) -> Path:
        """Local stand-in for Kubernetes Secrets: ``<secrets_dir>/<secret>/<key>`` files."""
        return Path(os.environ.get("LLMOPS_SECRETS_DIR", self.data_dir / "secrets"))

    @property
    def pods_dir(self) -> Path:
        """Working directories of local pods (result volume, scratch, logs)."""
        return self.data_dir / "pods"


def load(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    launcher = env.get("LLMOPS_LAUNCHER", "local")
    if launcher not in LAUNCHERS:
        raise SettingsError(f"LLMOPS_LAUNCHER={launcher!r}: must be one of {', '.join(LAUNCHERS)}")
    data_dir = Path(env.get("LLMOPS_DATA_DIR", PROJECT_ROOT / ".data"))
    jobs_image = env.get("LLMOPS_JOBS_IMAGE", DEFAULT_JOBS_IMAGE)
    vllm_image = env.get("LLMOPS_VLLM_IMAGE", DEFAULT_VLLM_IMAGE)
    vllm_venv = Path(env.get("LLMOPS_VLLM_VENV", PROJECT_ROOT / ".venv-vllm"))
    return Settings(
        launcher=launcher,  # type: ignore[arg-type]
        data_dir=data_dir,
        jobs_image=jobs_image,
        vllm_image=vllm_image,
        # The serving runtime's version, pinned in deployment manifests (needed when the
        # image reference carries a digest but no version tag).
        vllm_version=env.get("LLMOPS_VLLM_VERSION") or None,
        vllm_venv=vllm_venv,
        hardware_configs_dir=Path(
            env.get("LLMOPS_HARDWARE_CONFIGS_DIR", PROJECT_ROOT / "include" / "hardware_configs")
        ),
        evalsets_dir=Path(env.get("LLMOPS_EVALSETS_DIR", PROJECT_ROOT / "include" / "evalsets")),
        namespace=env.get("LLMOPS_K8S_NAMESPACE", "llmops"),
        service_account=env.get("LLMOPS_K8S_SERVICE_ACCOUNT", "llmops-jobs"),
        default_hardware_class=env.get("LLMOPS_DEFAULT_HARDWARE_CLASS", "cpu"),
        drop_poll_interval_s=float(env.get("LLMOPS_DROP_POLL_INTERVAL_S", "30")),
        canary_window_s=int(env.get("LLMOPS_CANARY_WINDOW_S", "300")),
        # Classes the refresh pipeline can qualify on (one task group each, with its pool).
        refresh_hardware_classes=tuple(
            c.strip() for c in env.get("LLMOPS_REFRESH_HARDWARE_CLASSES",
                                       env.get("LLMOPS_DEFAULT_HARDWARE_CLASS", "cpu")).split(",") if c.strip()
        ),
        local_runtimes=_local_runtimes(env, jobs_image, vllm_image, vllm_venv),
        canary_router=_canary_router(env.get("LLMOPS_CANARY_ROUTER",
                                             "gateway" if launcher == "kubernetes" else "nginx")),
        gateway_url_template=env.get("LLMOPS_GATEWAY_URL", "http://llmops-gateway.{namespace}.svc.cluster.local"),
    )


def _canary_router(value: str) -> str:
    if value not in CANARY_ROUTERS:
        raise SettingsError(f"LLMOPS_CANARY_ROUTER={value!r}: must be one of {', '.join(CANARY_ROUTERS)}")
    return value


def _local_runtimes(env: dict[str, str] | os._Environ[str], jobs_image: str, vllm_image: str,
                    vllm_venv: Path) -> dict[str, Path]:
    """Image repository -> local ``bin`` folder whose executables stand in for the image.

    The jobs image is this project's own code, so locally it is the virtual
    environment Airflow runs in; the vLLM image is the separate vLLM venv.
    ``LLMOPS_LOCAL_RUNTIMES`` (JSON object) adds or overrides entries.
    """
    runtimes = {
        image_repository(jobs_image): Path(sys.executable).parent,
        image_repository(vllm_image): vllm_venv / "bin",
    }
    raw = env.get("LLMOPS_LOCAL_RUNTIMES")
    if raw:
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError(
                f"LLMOPS_LOCAL_RUNTIMES is not valid JSON ({exc}); expected {{\"repo\": \"/path/bin\"}}"
            ) from exc
        if not isinstance(extra, dict):
            raise SettingsError("LLMOPS_LOCAL_RUNTIMES must be a JSON object {\"image repo\": \"/path/to/bin\"}")
        runtimes.update({image_repository(k): Path(v) for k, v in extra.items()})
    return runtimes
