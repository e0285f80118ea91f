"""Configuration of the benchmark pipeline: environment variables with embedded defaults.

Kept beside :mod:`llmops.config.settings` (which holds what every pipeline shares: launcher, images,
endpoints) and read the same way: cheap, no Airflow or network, safe at DAG parse time.

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

import os
from dataclasses import dataclass
from pathlib import Path

from llmops.config.settings import PROJECT_ROOT, SettingsError


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


def load(environ: dict[str, str] | None = None) -> BenchmarkSettings:
    """Read the benchmark settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    classes = tuple(c.strip() for c in env.get("LLMOPS_BENCHMARK_HARDWARE_CLASSES",
                                               env.get("LLMOPS_DEFAULT_HARDWARE_CLASS", "cpu")).split(",")
                    if c.strip())
    if not classes:
        raise SettingsError("LLMOPS_BENCHMARK_HARDWARE_CLASSES is empty: name at least one hardware class")
    timezone = env.get("LLMOPS_BENCHMARK_TIMEZONE", "UTC")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(timezone)
    except (KeyError, ValueError, OSError) as exc:
        raise SettingsError(f"LLMOPS_BENCHMARK_TIMEZONE={timezone!r} is not an IANA time zone "
                            f"(e.g. Europe/Berlin): {exc}") from None
    return BenchmarkSettings(
        hardware_classes=classes,
        default_model=env.get("LLMOPS_BENCHMARK_DEFAULT_MODEL", "tiny-chat/good"),
        model=env.get("LLMOPS_BENCHMARK_MODEL", "tiny-chat"),
        cron=env.get("LLMOPS_BENCHMARK_CRON", "0 2 * * *"),
        timezone=timezone,
        matrices_dir=Path(env.get("LLMOPS_BENCHMARK_MATRICES_DIR", PROJECT_ROOT / "include" / "benchmarks")),
        watch_cron=env.get("LLMOPS_BENCHMARK_WATCH_CRON", "*/15 * * * *"),
    )
