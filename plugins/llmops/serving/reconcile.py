"""Drift of the serving objects: what the live Deployments, Services and HTTPRoute differ in from
the pinned render, field by field (pure: dicts in, findings out; the I/O is in :mod:`.reconcile_io`).

Only what the render sets and what changes what is served is compared, so a live object read
back from the API server (``status``, ``metadata.managedFields``/``uid``/``resourceVersion``/
``generation``/``creationTimestamp``, fields it defaults) is no finding:

- ``Deployment``: ``spec.replicas``; the pod template's labels (the Services select on them);
  every container and init container matched **by name** (a reordered list is no drift): its
  image, command, args (vLLM flags compared flag by flag: ``--max-model-len 512 -> 1024``, an
  added ``--enforce-eager``), env matched **by name** (the weights URI and digest live there;
  an added variable is a finding too: it may change the engine) and resources (quantities
  compared by value: the API server writes ``1000m`` back as ``1``); a container the render
  does not have is a finding.
- ``Service``: the selector and the ports the render sets.
- ``HTTPRoute``: the parent Gateways and, per rule, every backendRef's name and weight (a
  missing weight is the Gateway API's default, 1).
- An object of the render that is not live is a finding; live objects outside the render are
  not read (this module only compares what the render owns).

A :class:`Drift` names the object, the field path (``spec.template.spec.containers[vllm].args
--max-model-len``), what the render expects, what is live, and a one-line fix;
:func:`reconcile_verdict` turns the findings into a verdict with readable reasons.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmops.core.fields import short_repr
from llmops.core.hardware import parse_quantity

REAPPLY_FIX = "re-apply the pinned render (trigger serving_reconcile with reapply=true)"
GATEWAY_DEFAULT_WEIGHT = 1
"""Weight of a backendRef that sets none (Gateway API)."""

LiveObjects = Mapping[tuple[str, str], Mapping[str, Any] | None]
"""Live objects keyed by ``(kind, name)``; ``None`` (or no key) when the object does not exist."""


@dataclass(frozen=True)
class Drift:
    """One field of one serving object that differs from the pinned render."""

    kind: str
    name: str
    field: str
    expected: Any
    actual: Any
    fix: str = REAPPLY_FIX

    @property
    def object(self) -> str:
        """``Kind/name``."""
        return f"{self.kind}/{self.name}"

    def line(self) -> str:
        """One readable line: object, field, expected -> live, and the fix."""
        return (f"{self.object} {self.field}: expected {_show(self.expected)}, live {_show(self.actual)}; "
                f"fix: {self.fix}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an XCom)."""
        return {"kind": self.kind, "name": self.name, "field": self.field, "expected": self.expected,
                "actual": self.actual, "fix": self.fix}


MISSING = "<missing>"
"""What a finding shows for a field or object that is not there."""


SHOW_MAX_CHARS = 300
"""A finding shows values up to this length whole (an image digest is ~100 characters)."""


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return value
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= SHOW_MAX_CHARS else text[:SHOW_MAX_CHARS] + "...(cut)"


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """``(kind, metadata.name)`` of a rendered object; a render without them is a programming error."""
    kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
    if not isinstance(kind, str) or not kind or not isinstance(name, str) or not name:
        raise ValueError(f"rendered object {short_repr(obj)}: kind and metadata.name are required; "
                         "fix: render every serving object with both")
    return kind, name


def diff_serving(desired: Sequence[Mapping[str, Any]], live: LiveObjects) -> list[Drift]:
    """Every drifted field of the live objects against the rendered ``desired`` ones, in render order."""
    drifts: list[Drift] = []
    for obj in desired:
        kind, name = object_key(obj)
        current = live.get((kind, name))
        if current is None:
            drifts.append(Drift(kind, name, "(object)", "present", MISSING,
                                f"the object does not exist: {REAPPLY_FIX}"))
            continue
        differ = _DIFFERS.get(kind)
        if differ is not None:
            drifts.extend(differ(kind, name, obj, current))
    return drifts


def hardware_drift(hardware_class: str, pinned_hash: str | None, current_hash: str, config_file: str) -> Drift | None:
    """A finding when the hardware class's config changed since the version was qualified on it.

    ``pinned_hash`` is the deployment manifest's ``hardware_configs[hardware_class]`` (``None``:
    the version was never qualified on that class); ``current_hash`` the config's hash now.
    """
    if pinned_hash == current_hash:
        return None
    if pinned_hash is None:
        return Drift("HardwareClass", hardware_class, "config_hash", "<qualified on this class>", "<not qualified>",
                     f"the serving version was not qualified on {hardware_class!r}: set "
                     "LLMOPS_DEFAULT_HARDWARE_CLASS to a class it was qualified on, or re-qualify it (model_refresh)")
    return Drift("HardwareClass", hardware_class, "config_hash", pinned_hash, current_hash,
                 f"{config_file} changed since the serving version was qualified: restore it "
                 "or re-qualify the version on it (model_refresh)")


def reconcile_verdict(drifts: Sequence[Drift]) -> dict[str, Any]:
    """``ok`` when nothing drifted, else ``drifted`` with one reason line per finding."""
    if not drifts:
        return {"status": "ok", "drifts": 0, "objects": [], "reasons": ["the live serving objects match the render"]}
    objects = list(dict.fromkeys(d.object for d in drifts))
    return {"status": "drifted", "drifts": len(drifts), "objects": objects, "reasons": [d.line() for d in drifts]}


# --- Deployment -----------------------------------------------------------------------------

_CONTAINER_LISTS = ("initContainers", "containers")


def _diff_deployment(kind: str, name: str, desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[Drift]:
    drifts: list[Drift] = []
    want_spec, live_spec = desired.get("spec") or {}, live.get("spec") or {}
    if "replicas" in want_spec:
        actual = live_spec.get("replicas", 1)  # the API server defaults replicas to 1
        if actual != want_spec["replicas"]:
            drifts.append(Drift(kind, name, "spec.replicas", want_spec["replicas"], actual))
    want_labels = ((want_spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    live_labels = ((live_spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    for label, value in want_labels.items():
        if live_labels.get(label) != value:
            drifts.append(Drift(kind, name, f"spec.template.metadata.labels[{label}]", value,
                                live_labels.get(label, MISSING)))
    want_pod = (want_spec.get("template") or {}).get("spec") or {}
    live_pod = (live_spec.get("template") or {}).get("spec") or {}
    for field in _CONTAINER_LISTS:
        drifts.extend(_diff_containers(kind, name, f"spec.template.spec.{field}",
                                       want_pod.get(field) or [], live_pod.get(field) or []))
    return drifts


def _by_name(items: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(item.get("name")): item for item in items}


def _diff_containers(kind: str, name: str, path: str, desired: Sequence[Mapping[str, Any]],
                     live: Sequence[Mapping[str, Any]]) -> list[Drift]:
    drifts: list[Drift] = []
    live_by_name = _by_name(live)
    for want in desired:
        cname = str(want.get("name"))
        where = f"{path}[{cname}]"
        current = live_by_name.get(cname)
        if current is None:
            drifts.append(Drift(kind, name, where, "present", MISSING))
            continue
        for field in ("image", "command"):
            if field in want and current.get(field) != want[field]:
                drifts.append(Drift(kind, name, f"{where}.{field}", want[field], current.get(field, MISSING)))
        if "args" in want:
            drifts.extend(Drift(kind, name, f"{where}.args{suffix}", expected, actual)
                          for suffix, expected, actual in diff_args(want["args"], current.get("args") or []))
        drifts.extend(_diff_env(kind, name, f"{where}.env", want.get("env") or [], current.get("env") or []))
        drifts.extend(_diff_resources(kind, name, f"{where}.resources", want.get("resources") or {},
                                      current.get("resources") or {}))
    wanted = {str(c.get("name")) for c in desired}
    for extra in live:
        if str(extra.get("name")) not in wanted:
            drifts.append(Drift(kind, name, f"{path}[{extra.get('name')}]", MISSING, "present",
                                f"a container the render does not have: {REAPPLY_FIX}"))
    return drifts


def _env_value(var: Mapping[str, Any]) -> Any:
    # `value: ""` is omitted when the API server writes the object back: the same as no value.
    if "valueFrom" in var:
        return {"valueFrom": var["valueFrom"]}
    return var.get("value", "")


def _diff_env(kind: str, name: str, path: str, desired: Sequence[Mapping[str, Any]],
              live: Sequence[Mapping[str, Any]]) -> list[Drift]:
    drifts: list[Drift] = []
    live_by_name = _by_name(live)
    for var in desired:
        vname = str(var.get("name"))
        current = live_by_name.get(vname)
        if current is None:
            drifts.append(Drift(kind, name, f"{path}[{vname}]", _env_value(var), MISSING))
            continue
        want, actual = _env_value(var), _env_value(current)
        if isinstance(want, dict) and isinstance(actual, dict):
            same = _subset(want, actual)  # the API server defaults e.g. fieldRef.apiVersion
        else:
            same = want == actual
        if not same:
            drifts.append(Drift(kind, name, f"{path}[{vname}]", want, actual))
    wanted = {str(v.get("name")) for v in desired}
    for var in live:
        if str(var.get("name")) not in wanted:
            drifts.append(Drift(kind, name, f"{path}[{var.get('name')}]", MISSING, _env_value(var),
                                f"a variable the render does not set: {REAPPLY_FIX}"))
    return drifts


def _diff_resources(kind: str, name: str, path: str, desired: Mapping[str, Any],
                    live: Mapping[str, Any]) -> list[Drift]:
    drifts: list[Drift] = []
    for group in ("requests", "limits"):
        want, current = desired.get(group) or {}, live.get(group) or {}
        for resource in sorted({*want, *current}):
            if resource not in want:
                drifts.append(Drift(kind, name, f"{path}.{group}[{resource}]", MISSING, current[resource]))
            elif resource not in current:
                drifts.append(Drift(kind, name, f"{path}.{group}[{resource}]", want[resource], MISSING))
            elif not same_quantity(want[resource], current[resource]):
                drifts.append(Drift(kind, name, f"{path}.{group}[{resource}]", want[resource], current[resource]))
    return drifts


def same_quantity(a: Any, b: Any) -> bool:
    """Two Kubernetes quantities with the same value (``1`` and ``1000m``, ``1Gi`` and ``1024Mi``)."""
    try:
        return abs(parse_quantity(str(a)) - parse_quantity(str(b))) <= 1e-9 * max(1.0, abs(parse_quantity(str(a))))
    except ValueError:
        return str(a) == str(b)


# --- args (vLLM flags) ----------------------------------------------------------------------

def _is_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not token[1].isdigit() and token[1] != "."


def parse_args(args: Sequence[Any]) -> tuple[list[str], dict[str, list[str | None]]]:
    """``(positionals, {flag: [value or None per occurrence]})``; ``--flag=value`` is ``--flag value``.

    A flag's value is the next token when it is not itself a flag (``-1`` is a value); a flag
    followed by a flag or by nothing is a switch (``--enforce-eager``, value ``None``).
    """
    tokens = [str(t) for t in args]
    positionals: list[str] = []
    flags: dict[str, list[str | None]] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not _is_flag(token):
            positionals.append(token)
            i += 1
            continue
        if token.startswith("--") and "=" in token:
            flag, value = token.split("=", 1)
            flags.setdefault(flag, []).append(value)
            i += 1
            continue
        if i + 1 < len(tokens) and not _is_flag(tokens[i + 1]):
            flags.setdefault(token, []).append(tokens[i + 1])
            i += 2
        else:
            flags.setdefault(token, []).append(None)
            i += 1
    return positionals, flags


def _flag_text(flag: str, values: list[str | None]) -> str:
    return " ".join(flag if v is None else f"{flag} {v}" for v in values)


def diff_args(desired: Sequence[Any], live: Sequence[Any]) -> list[tuple[str, str, str]]:
    """``(field suffix, expected, live)`` per changed positional argument or flag.

    Flags are compared by name, not position (vLLM reads them in any order): a changed value is
    ``(" --max-model-len", "--max-model-len 512", "--max-model-len 1024")``, an added switch
    ``(" --enforce-eager", "<missing>", "--enforce-eager")``.
    """
    want_pos, want_flags = parse_args(desired)
    live_pos, live_flags = parse_args(live)
    changes: list[tuple[str, str, str]] = []
    for i in range(max(len(want_pos), len(live_pos))):
        want = want_pos[i] if i < len(want_pos) else MISSING
        actual = live_pos[i] if i < len(live_pos) else MISSING
        if want != actual:
            changes.append((f"[{i}]", want, actual))
    for flag in [*want_flags, *(f for f in live_flags if f not in want_flags)]:
        want_values, live_values = want_flags.get(flag), live_flags.get(flag)
        if want_values == live_values:
            continue
        changes.append((f" {flag}", _flag_text(flag, want_values) if want_values else MISSING,
                        _flag_text(flag, live_values) if live_values else MISSING))
    return changes


# --- Service --------------------------------------------------------------------------------

def _diff_service(kind: str, name: str, desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[Drift]:
    drifts: list[Drift] = []
    want_spec, live_spec = desired.get("spec") or {}, live.get("spec") or {}
    if "selector" in want_spec and (live_spec.get("selector") or {}) != want_spec["selector"]:
        drifts.append(Drift(kind, name, "spec.selector", want_spec["selector"], live_spec.get("selector", MISSING)))
    live_ports = {_port_key(p): p for p in live_spec.get("ports") or []}
    for port in want_spec.get("ports") or []:
        key = _port_key(port)
        current = live_ports.get(key)
        if current is None or not _subset(port, current, defaults={"protocol": "TCP"}):
            drifts.append(Drift(kind, name, f"spec.ports[{key}]", dict(port), dict(current) if current else MISSING))
    return drifts


def _port_key(port: Mapping[str, Any]) -> str:
    return str(port.get("name") or port.get("port"))


# --- HTTPRoute ------------------------------------------------------------------------------

def _diff_route(kind: str, name: str, desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[Drift]:
    drifts: list[Drift] = []
    want_spec, live_spec = desired.get("spec") or {}, live.get("spec") or {}
    want_parents = want_spec.get("parentRefs") or []
    live_parents = live_spec.get("parentRefs") or []
    if len(want_parents) != len(live_parents) or not all(
            _subset(w, a, defaults={"group": "gateway.networking.k8s.io", "kind": "Gateway"})
            for w, a in zip(want_parents, live_parents, strict=False)):
        drifts.append(Drift(kind, name, "spec.parentRefs", list(want_parents), list(live_parents)))
    want_rules, live_rules = want_spec.get("rules") or [], live_spec.get("rules") or []
    if len(want_rules) != len(live_rules):
        drifts.append(Drift(kind, name, "spec.rules", f"{len(want_rules)} rules", f"{len(live_rules)} rules"))
    for i, (want, current) in enumerate(zip(want_rules, live_rules, strict=False)):
        drifts.extend(_diff_backend_refs(kind, name, f"spec.rules[{i}].backendRefs",
                                         want.get("backendRefs") or [], current.get("backendRefs") or []))
    return drifts


def _diff_backend_refs(kind: str, name: str, path: str, desired: Sequence[Mapping[str, Any]],
                       live: Sequence[Mapping[str, Any]]) -> list[Drift]:
    drifts: list[Drift] = []
    live_by_name = _by_name(live)
    for ref in desired:
        rname = str(ref.get("name"))
        current = live_by_name.get(rname)
        want_weight = ref.get("weight", GATEWAY_DEFAULT_WEIGHT)
        if current is None:
            drifts.append(Drift(kind, name, f"{path}[{rname}]", f"weight {want_weight}", MISSING))
            continue
        actual = current.get("weight", GATEWAY_DEFAULT_WEIGHT)
        if actual != want_weight:
            drifts.append(Drift(kind, name, f"{path}[{rname}].weight", want_weight, actual))
        if ref.get("port") is not None and current.get("port") != ref.get("port"):
            drifts.append(Drift(kind, name, f"{path}[{rname}].port", ref.get("port"), current.get("port", MISSING)))
    wanted = {str(r.get("name")) for r in desired}
    for ref in live:
        if str(ref.get("name")) not in wanted:
            drifts.append(Drift(kind, name, f"{path}[{ref.get('name')}]", MISSING,
                                f"weight {ref.get('weight', GATEWAY_DEFAULT_WEIGHT)}",
                                f"a backend the render does not route to: {REAPPLY_FIX}"))
    return drifts


# --- helpers --------------------------------------------------------------------------------

def _subset(want: Any, actual: Any, defaults: Mapping[str, Any] | None = None) -> bool:
    """Every key ``want`` sets is in ``actual`` with an equal value (recursively; lists exactly);
    keys ``actual`` has beyond those are what the API server added. ``defaults`` are top-level
    values the API server fills in when the render leaves them out."""
    if isinstance(want, Mapping) and isinstance(actual, Mapping):
        for key, value in want.items():
            if key not in actual:
                if defaults and defaults.get(key) == value:
                    continue
                return False
            if not _subset(value, actual[key]):
                return False
        return True
    return want == actual


_DIFFERS = {"Deployment": _diff_deployment, "Service": _diff_service, "HTTPRoute": _diff_route}
"""Field comparison per kind; an object of another kind is compared on its presence only."""
