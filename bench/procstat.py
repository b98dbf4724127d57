"""CPU time and resident memory of processes, from /proc (Linux)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (its threads included, children not)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 on


@dataclass
class CpuMeter:
    """CPU used by a set of named processes between :meth:`start` and :meth:`stop`, as a
    percentage of one core over the wall-clock time between them."""

    pids: dict[str, int]
    _cpu: dict[str, float] | None = None
    _wall: float = 0.0

    def start(self) -> None:
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        """The use since :meth:`start`; may be read again later (it measures on from start)."""
        if self._cpu is None:
            raise RuntimeError("CpuMeter.stop() before start()")
        elapsed = max(time.monotonic() - self._wall, 1e-9)
        return {
            name: round(100.0 * (cpu_seconds(pid) - self._cpu[name]) / elapsed, 1)
            for name, pid in self.pids.items()
        }
