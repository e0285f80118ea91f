"""The change watcher in Airflow's own runner: a first sight or a changed config emits the asset
event that schedules `nightly_benchmarks` for the changed classes; an unchanged state emits nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def _watcher(monkeypatch, configs_dir: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("LLMOPS_HARDWARE_CONFIGS_DIR", str(configs_dir))
    monkeypatch.setenv("LLMOPS_BENCHMARK_HARDWARE_CLASSES", "cpu,h100x1")
    bag = DagBag(dag_folder=str(ROOT / "dags" / "benchmark_change_watcher.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["benchmark_change_watcher"]


def _events() -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.name == "benchmark_targets_changed")
                               .order_by(AssetEvent.id)).scalars().all()
        return [dict(r.extra or {}) for r in rows]


def test_config_change_emits_one_event_naming_the_changed_class(airflow_db, monkeypatch, tmp_path: Path) -> None:
    configs = tmp_path / "hardware_configs"
    shutil.copytree(ROOT / "include" / "hardware_configs", configs)
    from airflow.models.variable import Variable  # the metadata DB's, outside a task

    Variable.delete("llmops_benchmark_watch_state")  # the watcher has never run
    before = len(_events())

    first = _watcher(monkeypatch, configs).test()
    assert first.state == "success"
    events = _events()[before:]
    assert len(events) == 1 and events[0]["classes"] == ["cpu", "h100x1"]  # first sight: every class

    unchanged = _watcher(monkeypatch, configs).test()
    assert {ti.task_id: ti.state for ti in unchanged.get_task_instances()}["emit"] == "skipped"
    assert len(_events()[before:]) == 1

    cpu = configs / "cpu.yaml"
    cpu.write_text(cpu.read_text().replace("max_num_seqs: 64", "max_num_seqs: 32"))
    changed = _watcher(monkeypatch, configs).test()
    assert changed.state == "success"
    events = _events()[before:]
    assert len(events) == 2 and events[1]["classes"] == ["cpu"]
    assert "cpu: hardware config changed" in events[1]["changes"][0]

    state = json.loads(Variable.get("llmops_benchmark_watch_state"))
    assert set(state) == {"cpu", "h100x1"}
