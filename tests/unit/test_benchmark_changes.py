"""Which classes changed since they were last benchmarked (pure)."""

from __future__ import annotations

from llmops.benchmarks.changes import Change, changed_classes, classes_from_events, diff, state_of

IMAGE = "vllm@sha256:" + "1" * 64


def test_nothing_changed_is_no_change() -> None:
    state = state_of({"cpu": "a" * 64, "h100x1": "b" * 64}, IMAGE)
    assert diff(state, state) == []


def test_new_class_config_change_and_runtime_change_are_each_reported() -> None:
    before = state_of({"cpu": "a" * 64, "h100x1": "b" * 64}, IMAGE)
    after = state_of({"cpu": "c" * 64, "h100x1": "b" * 64, "h200x1": "d" * 64}, IMAGE)
    changes = diff(before, after)
    assert changes == [Change("cpu", "config", "a" * 64, "c" * 64), Change("h200x1", "new_class", None, "d" * 64)]
    assert changed_classes(changes) == ["cpu", "h200x1"]
    assert "hardware config changed" in changes[0].describe()
    assert "new hardware class" in changes[1].describe()


def test_a_new_runtime_image_changes_every_class() -> None:
    before = state_of({"cpu": "a" * 64, "h100x1": "b" * 64}, IMAGE)
    after = state_of({"cpu": "a" * 64, "h100x1": "b" * 64}, "vllm@sha256:" + "2" * 64)
    changes = diff(before, after)
    assert [(c.hardware_class, c.kind) for c in changes] == [("cpu", "runtime"), ("h100x1", "runtime")]
    assert "runtime image changed" in changes[0].describe()


def test_both_changes_of_one_class_name_it_once() -> None:
    before = state_of({"cpu": "a" * 64}, IMAGE)
    after = state_of({"cpu": "b" * 64}, "other@sha256:" + "2" * 64)
    changes = diff(before, after)
    assert len(changes) == 2 and changed_classes(changes) == ["cpu"]


def test_a_removed_class_is_not_a_change() -> None:
    assert diff(state_of({"cpu": "a", "gone": "b"}, IMAGE), state_of({"cpu": "a"}, IMAGE)) == []


def test_first_sight_reports_every_class() -> None:
    assert changed_classes(diff({}, state_of({"cpu": "a", "h100x1": "b"}, IMAGE))) == ["cpu", "h100x1"]


def test_classes_from_asset_events_are_restricted_to_benchmarked_classes() -> None:
    events = [{"classes": ["cpu", "b200x4"]}, {"classes": ["cpu"]}, {}]
    assert classes_from_events(events, ["cpu", "h100x1"]) == ["cpu"]
    assert classes_from_events([], ["cpu"]) == []
