"""Find and kill the local processes a fault case started (read from ``/proc``).

A local pod's containers run in their own process groups (``start_new_session``); a process tree
(``ppid`` links) crosses those groups, which is how a test kills "the scheduler and everything it
runs", the way a container runtime would. Only processes found from a pid or folder the test
owns are touched, each by its id.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _ppids() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first found, breadth first)."""
    ppids = _ppids()
    children: dict[int, list[int]] = {}
    for child, parent in ppids.items():
        children.setdefault(parent, []).append(child)
    out, queue = [], list(children.get(pid, []))
    while queue:
        current = queue.pop(0)
        out.append(current)
        queue.extend(children.get(current, []))
    return out


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    return sorted(child for child, parent in _ppids().items() if parent == pid)


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def referring_to(folder: Path) -> list[int]:
    """Live processes whose command line or environment names ``folder`` (a pod's work folder),
    with their descendants."""
    needle = str(folder).encode()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                found.add(int(entry.name))
        except OSError:
            continue
    for pid in list(found):
        found.update(descendants(pid))
    return sorted(pid for pid in found if alive(pid))


def alive(pid: int) -> bool:
    """True for a live process (a zombie counts as gone)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill(pids: list[int], sig: signal.Signals = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to each pid; returns those it reached."""
    reached = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            reached.append(pid)
        except ProcessLookupError:
            pass
    return reached


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and every descendant (stopped first, so none forks a replacement meanwhile)."""
    tree = [pid, *descendants(pid)]
    kill(tree, signal.SIGSTOP)
    tree = [pid, *descendants(pid)]  # anything forked before the stop
    return kill(tree, signal.SIGKILL)
