"""What every pod job shares: its result file, logging set-up and endpoint env."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from llmops.config import settings
from llmops.core.podjob import XCOM_DIR

RESULT_FILE = "return.json"


def result_path() -> Path:
    """``/airflow/xcom/return.json`` in a pod; the local launcher maps the folder via ``LLMOPS_XCOM_DIR``."""
    return Path(settings.env("LLMOPS_XCOM_DIR") or XCOM_DIR) / RESULT_FILE


def write_result(result: dict[str, Any]) -> Path:
    """Write the job's result where the launcher collects it as the task's XCom.

    Written to a temporary name and renamed, so a killed job never leaves half a result.
    """
    path = result_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def setup_logging(name: str) -> logging.Logger:
    """Log lines to stdout, which both launchers stream into the Airflow task log."""
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return logging.getLogger(name)


def optional_env(name: str) -> str | None:
    """A declared env var (see :mod:`llmops.config.settings`), empty counting as unset: templated
    connection fields render empty in production."""
    return settings.env(name)
