"""The facts of the machine a benchmark ran on, saved with its figures."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def machine_facts() -> dict[str, Any]:
    """CPU model and count, memory, load (other work on the box skews every absolute
    figure: compare the ratios to the same-run baselines), kernel, Python."""
    facts: dict[str, Any] = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    return facts


def busy_processes(*, top: int = 5, sample_seconds: float = 1.0) -> list[dict[str, Any]]:
    """The processes using the most CPU over a short sample: what else ran on the box."""
    from bench.procstat import cpu_seconds

    def snapshot() -> dict[int, float]:
        taken: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    taken[int(entry.name)] = cpu_seconds(int(entry.name))
                except (OSError, ValueError, IndexError):
                    continue
        return taken

    before = snapshot()
    time.sleep(sample_seconds)
    after = snapshot()
    usage = sorted(
        ((after[pid] - before[pid], pid) for pid in after if pid in before), reverse=True
    )
    busy: list[dict[str, Any]] = []
    for used, pid in usage[:top]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        busy.append(
            {
                "pid": pid,
                "cpu_percent": round(100.0 * used / sample_seconds, 1),
                "command": command.decode(errors="replace").strip()[:120],
            }
        )
    return busy


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None
