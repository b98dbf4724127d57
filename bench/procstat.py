"""CPU time and resident memory of processes, from /proc (Linux)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

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


# The processes under one root (the bench), by what they are; everything else is "machine".
_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("taskmanager JVMs", ("java", "taskexecutorrunner")),
    ("taskmanager JVMs", ("java", "taskmanagerrunner")),
    ("helper JVMs", ("java", "bashjavautils")),
    ("jobmanager JVM", ("java",)),
    ("agents", ("rmd", "taskmanager")),
    ("daemon", ("rmd", "daemon")),
    ("control plane", ("kube-",)),
    ("control plane", ("etcd",)),
    ("node emulator", ("emulator",)),
)


def _kind(cmdline: str) -> str:
    cmdline = cmdline.lower()
    for kind, words in _KINDS:
        if all(word in cmdline for word in words):
            return kind
    return "bench and other own"


@dataclass
class TreeCpu:
    """CPU seconds by kind of process between :meth:`start` and :meth:`stop`, sampled from
    /proc every call to :meth:`sample`: the descendants of ``root`` by what they run (a
    process that starts meanwhile counts from zero; one that ends counts up to its last
    sample), everything else on the machine as ``machine``."""

    root: int
    _first: dict[int, float] = field(default_factory=dict)
    _last: dict[int, tuple[str, float]] = field(default_factory=dict)

    def start(self) -> None:
        self._first = {pid: cpu for pid, (_, cpu) in self._read().items()}
        self._last = {}
        self.sample()

    def sample(self) -> None:
        self._last.update(self._read())

    def stop(self) -> dict[str, float]:
        self.sample()
        totals: dict[str, float] = {}
        for pid, (kind, cpu) in self._last.items():
            totals[kind] = totals.get(kind, 0.0) + cpu - self._first.get(pid, 0.0)
        return {kind: round(seconds, 2) for kind, seconds in sorted(totals.items())}

    def _read(self) -> dict[int, tuple[str, float]]:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = _stat_fields(int(entry))
            except (OSError, ValueError):
                continue
            parents[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICKS
        ours: dict[int, bool] = {self.root: True}

        def is_ours(pid: int) -> bool:
            chain = []
            while pid not in ours and pid > 1 and pid in parents:
                chain.append(pid)
                pid = parents[pid]
            answer = ours.get(pid, False)
            for link in chain:
                ours[link] = answer
            return answer

        kinds: dict[int, tuple[str, float]] = {}
        for pid, seconds in cpu.items():
            if pid == self.root:
                kinds[pid] = ("bench and other own", seconds)
            elif is_ours(pid):
                kinds[pid] = (_kind(_cmdline(pid)), seconds)
            else:
                kinds[pid] = ("machine", seconds)
        return kinds


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
