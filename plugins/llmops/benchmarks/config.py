"""Configuration of the benchmark pipeline, resolved from the variables that
:mod:`llmops.config.settings` declares (cheap, no Airflow or network, safe at DAG parse time).

=====================================  ===========================================================
``LLMOPS_BENCHMARK_HARDWARE_CLASSES``  classes benchmarked every night (comma-separated; default:
                                       ``LLMOPS_DEFAULT_HARDWARE_CLASS``, ``cpu`` embedded)
``LLMOPS_BENCHMARK_DEFAULT_MODEL``     checkpoint under the model cache benchmarked when the
                                       registry has no champion (default ``tiny-chat/good``)
``LLMOPS_BENCHMARK_MODEL``             registered model whose champion/challenger are served
                                       (default ``tiny-chat``)
``LLMOPS_BENCHMARK_CRON``              nightly schedule (default ``0 2 * * *``)
``LLMOPS_BENCHMARK_TIMEZONE``          the schedule's time zone (default ``UTC``), DST-aware
``LLMOPS_BENCHMARK_MATRICES_DIR``      workload matrices (default ``include/benchmarks``)
``LLMOPS_BENCHMARK_WATCH_CRON``        how often config/runtime changes are looked for
                                       (default every 15 minutes)
=====================================  ===========================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmops.config.settings import PROJECT_ROOT, SettingsError, comma_list, env

# A hardware class name (llmops.core.hardware's rule): it becomes a file name and an MLflow tag.
_CLASS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@dataclass(frozen=True)
class BenchmarkSettings:
    """Resolved benchmark configuration (see the module docstring)."""

    hardware_classes: tuple[str, ...]
    default_model: str
    model: str
    cron: str
    timezone: str
    matrices_dir: Path
    watch_cron: str


def load(environ: Mapping[str, str] | None = None) -> BenchmarkSettings:
    """Read the benchmark settings from ``environ`` (default: the process environment)."""
    def get(name: str) -> str:
        return env(name, environ) or ""

    classes = comma_list(env("LLMOPS_BENCHMARK_HARDWARE_CLASSES", environ, use_default=False)
                         or get("LLMOPS_DEFAULT_HARDWARE_CLASS"))
    if not classes:
        raise SettingsError("LLMOPS_BENCHMARK_HARDWARE_CLASSES is empty: name at least one hardware class")
    for name in classes:
        if not _CLASS_NAME.match(name):
            raise SettingsError(f"LLMOPS_BENCHMARK_HARDWARE_CLASSES: {name[:100]!r} is not a hardware class name; "
                                "fix: use the names of include/hardware_configs/<name>.yaml, comma-separated "
                                "(lowercase letters, digits and '-')")
    timezone = get("LLMOPS_BENCHMARK_TIMEZONE")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(timezone)
    except (KeyError, ValueError, OSError) as exc:
        raise SettingsError(f"LLMOPS_BENCHMARK_TIMEZONE={timezone[:100]!r} is not an IANA time zone; "
                            f"fix: use a name such as Europe/Berlin or UTC ({str(exc)[:200]})") from None
    return BenchmarkSettings(
        hardware_classes=classes,
        default_model=get("LLMOPS_BENCHMARK_DEFAULT_MODEL"),
        model=get("LLMOPS_BENCHMARK_MODEL"),
        cron=get("LLMOPS_BENCHMARK_CRON"),
        timezone=timezone,
        matrices_dir=Path(get("LLMOPS_BENCHMARK_MATRICES_DIR") or PROJECT_ROOT / "include" / "benchmarks"),
        watch_cron=get("LLMOPS_BENCHMARK_WATCH_CRON"),
    )
