"""What the bench reads of processes and of the machine, from ``/proc`` (Linux)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant (bounded: a process tree here is small)."""
    seen, todo = [pid], [pid]
    while todo and len(seen) < 1000:
        for child in children(todo.pop()):
            if child not in seen:
                seen.append(child)
                todo.append(child)
    return seen


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid``; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used so far (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def pids_named(*names: str) -> list[int]:
    """Processes whose command name starts with one of ``names`` (e.g. postgres)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip().startswith(names):
                found.append(int(entry.name))
    return found


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, every core summed."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / _TICKS, total / _TICKS


class CpuMeter:
    """CPU used by groups of processes between ``start`` and ``stop``.
    ``groups`` maps a name to the pids it stands for (read again at each call)."""

    def __init__(self) -> None:
        self._before: dict[str, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)

    @staticmethod
    def _sample(groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}

    def start(self, groups: Mapping[str, Iterable[int]]) -> None:
        self._before = self._sample(groups)
        self._machine = machine_busy_seconds()

    def stop(self, groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
        after = self._sample(groups)
        busy, total = machine_busy_seconds()
        used = {name: round(after[name] - self._before.get(name, 0.0), 2) for name in after}
        used["machine_busy"] = round(busy - self._machine[0], 2)
        used["machine_total"] = round(total - self._machine[1], 2)
        return used


def load_average() -> float:
    return os.getloadavg()[0]
