"""
### Benchmark change watcher: a changed hardware config or runtime image triggers benchmarks

Every few minutes (`LLMOPS_BENCHMARK_WATCH_CRON`, no catch-up) this DAG hashes each
benchmarked hardware class's config (`include/hardware_configs/<class>.yaml`, the canonical
hash that deployments pin) and notes the serving runtime image (`LLMOPS_VLLM_IMAGE`). It
compares them with what it last acted on (Airflow Variable `llmops_benchmark_watch_state`):

* nothing changed: `emit` is skipped, no asset event, nothing runs;
* a class is new, its config hash changed, or the runtime image changed: `emit` updates the
  asset `benchmark_targets_changed` with `extra = {"classes": [...], "changes": [...]}`, and
  `nightly_benchmarks` (scheduled on cron *or* that asset) benchmarks just those classes.
  A config change starts a new baseline there and is reported as such.
"""

from __future__ import annotations

from airflow.sdk import DAG, CronTriggerTimetable, task

from llmops.benchmarks import config
from llmops.benchmarks.assets import TARGETS_CHANGED
from llmops.config import dag_defaults, settings

SETTINGS = settings.load()
BENCH = config.load()
STATE_VARIABLE = "llmops_benchmark_watch_state"

with DAG(
    dag_id="benchmark_change_watcher",
    description="Emit an asset event when a benchmarked hardware config or the runtime image changes",
    schedule=CronTriggerTimetable(BENCH.watch_cron, timezone=BENCH.timezone),
    start_date=dag_defaults.START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=dag_defaults.tags("benchmarks"),
    default_args=dag_defaults.default_args(),
    doc_md=__doc__,
) as dag:

    @task(task_id="detect", multiple_outputs=True)
    def detect() -> dict:
        """Config hashes and runtime image now, and how they differ from the state last acted on."""
        import json

        from airflow.sdk import Variable

        from llmops.benchmarks import changes
        from llmops.core.hardware import load_hardware_class

        hashes = {name: load_hardware_class(name, SETTINGS.hardware_configs_dir).config_hash
                  for name in BENCH.hardware_classes}
        current = changes.state_of(hashes, SETTINGS.vllm_image)
        previous = json.loads(Variable.get(STATE_VARIABLE, default="{}"))
        found = changes.diff(previous, current)
        return {"state": current, "changes": [c.to_dict() for c in found],
                "classes": changes.changed_classes(found), "descriptions": [c.describe() for c in found]}

    @task(task_id="emit", outlets=[TARGETS_CHANGED], multiple_outputs=True)
    def emit(detected: dict, outlet_events=None) -> dict:
        """Asset event naming the changed classes (skipped, so no event, when nothing changed)."""
        import json

        from airflow.sdk import Variable
        from airflow.sdk.exceptions import AirflowSkipException

        if not detected["classes"]:
            raise AirflowSkipException("no hardware config or runtime change since the last benchmark trigger")
        outlet_events[TARGETS_CHANGED].extra = {"classes": detected["classes"],
                                                "changes": detected["descriptions"]}
        # Last step before success (which is when Airflow records the event): a failure before
        # here retries and detects the same changes again, so no change is lost.
        Variable.set(STATE_VARIABLE, json.dumps(detected["state"], sort_keys=True))
        return {"classes": detected["classes"], "changes": detected["descriptions"]}

    emit(detect())
