"""What changed since the classes were last benchmarked: hardware config hashes and the runtime image (pure).

The watcher DAG keeps the state it last acted on (class -> config hash and runtime image) and
compares it with the current configs; each difference is a :class:`Change`, and the changed
classes are what the asset-triggered benchmark run benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

ChangeKind = Literal["new_class", "config", "runtime"]


@dataclass(frozen=True)
class Change:
    """One class whose config or runtime differs from what was last benchmarked."""

    hardware_class: str
    kind: ChangeKind
    old: str | None
    new: str

    def describe(self) -> str:
        if self.kind == "new_class":
            return f"{self.hardware_class}: new hardware class (config {self.new[:12]})"
        what = "hardware config" if self.kind == "config" else "runtime image"
        return f"{self.hardware_class}: {what} changed {(self.old or '')[:24]} -> {self.new[:24]}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_of(config_hashes: Mapping[str, str], runtime_image: str) -> dict[str, dict[str, str]]:
    """The state to remember: per class, its config hash and the runtime image it is served with."""
    return {name: {"config_hash": digest, "runtime_image": runtime_image}
            for name, digest in sorted(config_hashes.items())}


def diff(previous: Mapping[str, Mapping[str, str]], current: Mapping[str, Mapping[str, str]]) -> list[Change]:
    """Every class of ``current`` that is new or whose config hash or runtime image changed.

    Classes that disappeared are not changes (there is nothing to benchmark).
    """
    changes: list[Change] = []
    for name in sorted(current):
        now = current[name]
        before = previous.get(name)
        if before is None:
            changes.append(Change(name, "new_class", None, now["config_hash"]))
            continue
        if before.get("config_hash") != now["config_hash"]:
            changes.append(Change(name, "config", before.get("config_hash"), now["config_hash"]))
        if before.get("runtime_image") != now["runtime_image"]:
            changes.append(Change(name, "runtime", before.get("runtime_image"), now["runtime_image"]))
    return changes


def changed_classes(changes: list[Change]) -> list[str]:
    """The classes to benchmark, each once, sorted."""
    return sorted({c.hardware_class for c in changes})


def classes_from_events(events: list[Mapping[str, Any]], allowed: list[str] | tuple[str, ...]) -> list[str]:
    """Classes named by triggering asset events' ``extra["classes"]``, restricted to ``allowed``."""
    named = {str(c) for event in events for c in (event.get("classes") or [])}
    return sorted(named & set(allowed))
