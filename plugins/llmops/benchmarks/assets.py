"""Airflow Assets of the benchmark pipeline (cheap to import: DAG files use them at parse time).

- :data:`TARGETS_CHANGED`: a hardware config or the runtime image changed since the classes
  were last benchmarked; ``benchmark_change_watcher`` emits it, ``nightly_benchmarks`` runs on it.

The ``x-`` URI scheme is Airflow's for user-defined assets: Airflow does not look for a
provider to normalise it, so a DAG file declaring it does not import every provider's URI
handlers (the Amazon one imports boto3) at parse time.
"""

from __future__ import annotations

from airflow.sdk import Asset

TARGETS_CHANGED = Asset(name="benchmark_targets_changed", uri="x-llmops://benchmarks/targets-changed",
                        group="benchmarks")
