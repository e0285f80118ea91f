"""One place for configuration: every environment variable the project reads, declared once.

Everything that differs between the embedded default and production (launcher, images,
endpoints, data folders, schedules) is an environment variable declared in :data:`ENV_VARS`
with its default and what it means, and read through :func:`env` (or :func:`load`, which
resolves the common ones into :class:`Settings`) and nowhere else: a test fails on an
``os.environ`` read in any other module. Production swaps values by configuration, never by
a code edit. Reading is cheap (no Airflow or network access), so DAG files may call
:func:`load` at parse time. ``python -m llmops.config.settings`` prints the table that
``docs/configuration.md`` holds.

Connections (S3, MLflow, Kubernetes) are Airflow connections, declared in
``airflow_settings.yaml``; pod jobs receive their values through Jinja templates rendered at
run time into their env (``AWS_ENDPOINT_URL``, ``MLFLOW_TRACKING_URI``), read here as well.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llmops.config.images import image_repository

PROJECT_ROOT = Path(__file__).resolve().parents[3]

Launcher = Literal["local", "kubernetes"]
LAUNCHERS: tuple[str, ...] = ("local", "kubernetes")
CANARY_ROUTERS: tuple[str, ...] = ("nginx", "gateway")

# Images the pod jobs run. Production must set digest-pinned references
# (repo@sha256:...); the kubernetes launcher refuses anything else. The embedded
# default maps each image repository to a local runtime (see local_runtimes).
DEFAULT_JOBS_IMAGE = "ghcr.io/llmops-lifecycle/llmops-jobs:0.1.0"
DEFAULT_VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.32.0"


@dataclass(frozen=True)
class EnvVar:
    """One environment variable the project reads: its default (``None``: unset) and meaning."""

    name: str
    default: str | None
    doc: str
    where: str = "airflow"  # who reads it: airflow (DAGs and tasks), pod (pod jobs), embedded (the platform)


ENV_VARS: dict[str, EnvVar] = {v.name: v for v in (
    # -- Airflow side: launcher, images, folders, classes -----------------------------------------
    EnvVar("LLMOPS_LAUNCHER", "local", "`local` (embedded default: pods as local processes) or `kubernetes`"),
    EnvVar("LLMOPS_DATA_DIR", None, "the embedded platform's data folder (default `<project>/.data`)"),
    EnvVar("LLMOPS_JOBS_IMAGE", DEFAULT_JOBS_IMAGE, "the jobs image; production: `repo@sha256:...`"),
    EnvVar("LLMOPS_VLLM_IMAGE", DEFAULT_VLLM_IMAGE, "the vLLM serving image; production: `repo@sha256:...`"),
    EnvVar("LLMOPS_VLLM_VERSION", None, "the serving runtime's version, pinned in deployment manifests "
           "(needed when the image carries a digest but no version tag)", "airflow, pod"),
    EnvVar("LLMOPS_VLLM_VENV", None, "local stand-in for the vLLM image (default `<project>/.venv-vllm`)"),
    EnvVar("LLMOPS_LOCAL_RUNTIMES", None, "JSON object `{\"image repo\": \"/path/to/bin\"}`: more local runtimes"),
    EnvVar("LLMOPS_MODELS_DIR", None, "the local model cache (default `<data dir>/models`)"),
    EnvVar("LLMOPS_SECRETS_DIR", None, "local stand-in for Kubernetes Secrets: `<dir>/<secret>/<key>` "
           "(default `<data dir>/secrets`)"),
    EnvVar("LLMOPS_HARDWARE_CONFIGS_DIR", None, "hardware classes (default `include/hardware_configs`)"),
    EnvVar("LLMOPS_EVALSETS_DIR", None, "eval sets (default `include/evalsets`)"),
    EnvVar("LLMOPS_RUNTIMES_FILE", None, "the serving-runtime allowlist (default `include/runtimes.yaml`); "
           "receive refuses a drop pinned to an image not listed there", "airflow, pod"),
    EnvVar("LLMOPS_K8S_NAMESPACE", "llmops", "namespace of pods and serving objects"),
    EnvVar("LLMOPS_K8S_SERVICE_ACCOUNT", "llmops-jobs", "service account of job pods"),
    EnvVar("LLMOPS_DEFAULT_HARDWARE_CLASS", "cpu", "the class serving and canaries run on"),
    EnvVar("LLMOPS_REFRESH_HARDWARE_CLASSES", None, "classes the refresh pipeline can qualify on "
           "(comma-separated; default: the default class)"),
    EnvVar("LLMOPS_DROP_POLL_INTERVAL_S", "30", "how often the drop watcher's trigger polls the drops bucket"),
    EnvVar("LLMOPS_DROP_SWEEP_INTERVAL_S", "900", "how often (seconds) the drop watcher also sweeps every manifest "
           "of the drops bucket, for drops written without an arrival record"),
    EnvVar("LLMOPS_CANARY_WINDOW_S", "300", "default window of a canary step, in seconds"),
    EnvVar("LLMOPS_CANARY_ROUTER", None, "`nginx` (proxy inside the canary pod) or `gateway` (HTTPRoute); "
           "default: gateway with the kubernetes launcher, nginx otherwise"),
    EnvVar("LLMOPS_GATEWAY_URL", "http://llmops-gateway.{namespace}.svc.cluster.local",
           "where clients reach a model's HTTPRoute (`{namespace}` is filled in)"),
    EnvVar("LLMOPS_CORPUS_VECTOR_STORE", "local", "`local` (exact-cosine index) or `qdrant`"),
    EnvVar("LLMOPS_NGINX_BIN", None, "the nginx binary of the embedded canary router (default: found on PATH)",
           "airflow, pod"),
    # -- Benchmarks ---------------------------------------------------------------------------------
    EnvVar("LLMOPS_BENCHMARK_HARDWARE_CLASSES", None, "classes benchmarked every night (comma-separated; "
           "default: the default class)"),
    EnvVar("LLMOPS_BENCHMARK_DEFAULT_MODEL", "tiny-chat/good", "checkpoint under the model cache benchmarked "
           "when the registry has no champion"),
    EnvVar("LLMOPS_BENCHMARK_MODEL", "tiny-chat", "registered model whose champion/challenger are benchmarked"),
    EnvVar("LLMOPS_BENCHMARK_CRON", "0 2 * * *", "nightly benchmark schedule"),
    EnvVar("LLMOPS_BENCHMARK_TIMEZONE", "UTC", "the schedule's IANA time zone (DST-aware)"),
    EnvVar("LLMOPS_BENCHMARK_MATRICES_DIR", None, "workload matrices (default `include/benchmarks`)"),
    EnvVar("LLMOPS_BENCHMARK_WATCH_CRON", "*/15 * * * *", "how often config/runtime changes are looked for"),
    # -- Pod jobs -----------------------------------------------------------------------------------
    EnvVar("AWS_ENDPOINT_URL", None, "S3-compatible endpoint of a pod job (empty: AWS S3 itself)", "pod"),
    EnvVar("AWS_DEFAULT_REGION", None, "S3 region of a pod job (default us-east-1)", "pod"),
    EnvVar("AWS_REGION", None, "S3 region of a pod job, when AWS_DEFAULT_REGION is unset", "pod"),
    EnvVar("MLFLOW_TRACKING_URI", None, "the MLflow tracking server a pod job logs to", "pod"),
    EnvVar("VLLM_PORT", "8000", "port of the vLLM sidecar beside a job", "pod"),
    EnvVar("LLMOPS_XCOM_DIR", None, "where a job writes return.json (default /airflow/xcom; the local "
           "launcher maps it)", "pod"),
    EnvVar("LLMOPS_HARDWARE_CLASS", None, "the hardware class a job runs on (set by the pod job)", "pod"),
    EnvVar("LLMOPS_HARDWARE_CONFIG_HASH", None, "that class's config hash (set by the pod job)", "pod"),
    EnvVar("LLMOPS_RUNTIME_IMAGE", None, "the serving runtime image a job measures (set by the pod job)", "pod"),
    EnvVar("LLMOPS_DROPS_BUCKET", None, "drops bucket of `publish_drop` (default llmops-drops)", "pod"),
    EnvVar("LLMOPS_MODELS_BUCKET", None, "models bucket of `receive` (receipts) and `stage` (default llmops-models)",
           "pod"),
    EnvVar("LLMOPS_QDRANT_URL", None, "Qdrant endpoint of the corpus publish job (vector store `qdrant`)", "pod"),
    EnvVar("LLMOPS_QDRANT_API_KEY", None, "Qdrant API key (from a Kubernetes Secret)", "pod"),
    EnvVar("TMPDIR", "/tmp", "scratch folder of the benchmark job", "pod"),
    # -- Embedded platform --------------------------------------------------------------------------
    EnvVar("LLMOPS_S3_PORT", "9000", "port of the embedded S3 endpoint", "embedded"),
    EnvVar("LLMOPS_MLFLOW_PORT", "5000", "port of the embedded MLflow server", "embedded"),
    EnvVar("LLMOPS_AIRFLOW_PORT", "8080", "port of the embedded Airflow API server and UI", "embedded"),
    EnvVar("PYTHONPATH", None, "passed on to the embedded platform's processes", "embedded"),
    EnvVar("PATH", None, "passed on to local pods and the embedded platform's processes", "embedded"),
    EnvVar("HOME", None, "passed on to local pods", "embedded"),
)}


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable and the fix."""


def env(name: str, environ: Mapping[str, str] | None = None, *, use_default: bool = True) -> str | None:
    """The value of the declared environment variable ``name``: its default when unset or empty
    (``use_default=False``: ``None`` then, for a caller whose own default differs, e.g. the
    embedded platform's shorter canary window).

    Empty counts as unset because templated connection fields render empty in production.
    Raises :class:`SettingsError` for an undeclared name (declare it in :data:`ENV_VARS`).
    """
    declared = ENV_VARS.get(name)
    if declared is None:
        raise SettingsError(f"{name} is not declared in llmops.config.settings.ENV_VARS; "
                            f"fix: declare it there with its default and meaning")
    source = os.environ if environ is None else environ
    value = (source.get(name) or "").strip()
    return value or (declared.default if use_default else None)


def process_environ() -> dict[str, str]:
    """A copy of this process's whole environment, for a child process that inherits it."""
    return dict(os.environ)


def export(values: Mapping[str, str]) -> None:
    """Set ``values`` in this process's environment (what the embedded CLI's children inherit)."""
    os.environ.update(values)


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
    drop_sweep_interval_s: float = 900.0
    local_runtimes: dict[str, Path] = field(default_factory=dict)
    # How canary traffic is split: "nginx" (a proxy inside the canary pod, the embedded default)
    # or "gateway" (a model's long-lived HTTPRoute and Deployments; see llmops.serving.deployments).
    canary_router: str = "nginx"
    # Where clients reach a model's HTTPRoute ({model} and {namespace} are filled in).
    gateway_url_template: str = "http://llmops-gateway.{namespace}.svc.cluster.local"
    corpus_vector_store: str = "local"
    # The environment the settings were read from (None: the process's), for derived folders.
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def models_dir(self) -> Path:
        """Where the model maker writes its checkpoints (the embedded model cache)."""
        return Path(env("LLMOPS_MODELS_DIR", self.environ) or self.data_dir / "models")

    @property
    def runtimes_file(self) -> Path:
        """The serving-runtime allowlist (:mod:`llmops.core.runtimes`)."""
        return runtimes_file(self.environ)

    @property
    def secrets_dir(self) -> Path:
        """Local stand-in for Kubernetes Secrets: ``<secrets_dir>/<secret>/<key>`` files."""
        return Path(env("LLMOPS_SECRETS_DIR", self.environ) or self.data_dir / "secrets")

    @property
    def pods_dir(self) -> Path:
        """Working directories of local pods (result volume, scratch, logs)."""
        return self.data_dir / "pods"


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: the process environment)."""
    def get(name: str) -> str | None:
        return env(name, environ)

    launcher = get("LLMOPS_LAUNCHER")
    if launcher not in LAUNCHERS:
        raise SettingsError(f"LLMOPS_LAUNCHER={launcher!r}: must be one of {', '.join(LAUNCHERS)}")
    data_dir = Path(get("LLMOPS_DATA_DIR") or PROJECT_ROOT / ".data")
    jobs_image = get("LLMOPS_JOBS_IMAGE") or DEFAULT_JOBS_IMAGE
    vllm_image = get("LLMOPS_VLLM_IMAGE") or DEFAULT_VLLM_IMAGE
    vllm_venv = Path(get("LLMOPS_VLLM_VENV") or PROJECT_ROOT / ".venv-vllm")
    default_class = get("LLMOPS_DEFAULT_HARDWARE_CLASS") or "cpu"
    return Settings(
        launcher=launcher,  # type: ignore[arg-type]
        data_dir=data_dir,
        jobs_image=jobs_image,
        vllm_image=vllm_image,
        vllm_version=get("LLMOPS_VLLM_VERSION"),
        vllm_venv=vllm_venv,
        hardware_configs_dir=Path(get("LLMOPS_HARDWARE_CONFIGS_DIR") or PROJECT_ROOT / "include" / "hardware_configs"),
        evalsets_dir=Path(get("LLMOPS_EVALSETS_DIR") or PROJECT_ROOT / "include" / "evalsets"),
        namespace=get("LLMOPS_K8S_NAMESPACE") or "llmops",
        service_account=get("LLMOPS_K8S_SERVICE_ACCOUNT") or "llmops-jobs",
        default_hardware_class=default_class,
        drop_poll_interval_s=_number("LLMOPS_DROP_POLL_INTERVAL_S", get("LLMOPS_DROP_POLL_INTERVAL_S"), float),
        drop_sweep_interval_s=_number("LLMOPS_DROP_SWEEP_INTERVAL_S", get("LLMOPS_DROP_SWEEP_INTERVAL_S"), float),
        canary_window_s=_number("LLMOPS_CANARY_WINDOW_S", get("LLMOPS_CANARY_WINDOW_S"), int),
        refresh_hardware_classes=comma_list(get("LLMOPS_REFRESH_HARDWARE_CLASSES") or default_class),
        local_runtimes=_local_runtimes(get("LLMOPS_LOCAL_RUNTIMES"), jobs_image, vllm_image, vllm_venv),
        canary_router=_canary_router(get("LLMOPS_CANARY_ROUTER")
                                     or ("gateway" if launcher == "kubernetes" else "nginx")),
        gateway_url_template=get("LLMOPS_GATEWAY_URL") or ENV_VARS["LLMOPS_GATEWAY_URL"].default or "",
        corpus_vector_store=get("LLMOPS_CORPUS_VECTOR_STORE") or "local",
        environ=environ,
    )


def runtimes_file(environ: Mapping[str, str] | None = None) -> Path:
    """The serving-runtime allowlist: ``$LLMOPS_RUNTIMES_FILE`` or ``include/runtimes.yaml``."""
    return Path(env("LLMOPS_RUNTIMES_FILE", environ) or PROJECT_ROOT / "include" / "runtimes.yaml")


def comma_list(value: str | None) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _number(name: str, value: str | None, kind: type) -> float:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}={value!r} is not a {kind.__name__}; fix: set a number "
                            f"(default {ENV_VARS[name].default})") from None


def markdown_table() -> str:
    """Every declared environment variable as a Markdown table (``docs/configuration.md``)."""
    rows = ["| variable | default | read by | meaning |", "|---|---|---|---|"]
    for var in ENV_VARS.values():
        default = f"`{var.default}`" if var.default is not None else "(unset)"
        rows.append(f"| `{var.name}` | {default} | {var.where} | {var.doc} |")
    return "\n".join(rows) + "\n"


def _canary_router(value: str) -> str:
    if value not in CANARY_ROUTERS:
        raise SettingsError(f"LLMOPS_CANARY_ROUTER={value!r}: must be one of {', '.join(CANARY_ROUTERS)}")
    return value


def _local_runtimes(raw: str | None, jobs_image: str, vllm_image: str, vllm_venv: Path) -> dict[str, Path]:
    """Image repository -> local ``bin`` folder whose executables stand in for the image.

    The jobs image is this project's own code, so locally it is the virtual
    environment Airflow runs in; the vLLM image is the separate vLLM venv.
    ``LLMOPS_LOCAL_RUNTIMES`` (JSON object) adds or overrides entries.
    """
    runtimes = {
        image_repository(jobs_image): Path(sys.executable).parent,
        image_repository(vllm_image): vllm_venv / "bin",
    }
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


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
