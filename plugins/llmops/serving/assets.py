"""Airflow Assets of serving (cheap to import: DAG files use them at parse time).

- :data:`SERVING_CHANGED`: a model's serving version changed (``model_refresh``'s promote and
  ``model_rollback``'s rollback emit it); ``serving_reconcile`` runs on it, beside its hourly
  schedule, to check the live serving objects against the new pinned render.

The ``x-`` URI scheme is Airflow's for user-defined assets (see
:mod:`llmops.benchmarks.assets`): no provider is imported to normalise it at parse time.
"""

from __future__ import annotations

from airflow.sdk import Asset

SERVING_CHANGED = Asset(name="serving_changed", uri="x-llmops://serving/changed", group="serving")
