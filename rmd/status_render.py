"""What ``rmd status`` prints: the daemon's three documents as tables, JSON or YAML.

Pure: the documents and the time to measure ages against go in, text comes out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

__all__ = ["OUTPUT_FORMATS", "Snapshot", "age", "render", "summary_line"]

OUTPUT_FORMATS = ("table", "json", "yaml")
_STATES = ("registered", "pending", "requested", "releasing")
_REASON_WIDTH = 100


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """``/v1/status``, ``/v1/taskmanagers`` and ``/v1/jobs`` as the daemon answered them."""

    status: dict[str, Any]
    taskmanagers: list[dict[str, Any]]
    jobs: list[dict[str, Any]]

    def document(self) -> dict[str, Any]:
        return {"status": self.status, "taskmanagers": self.taskmanagers, "jobs": self.jobs}


def render(snapshot: Snapshot, *, output: str, now: float) -> str:
    """The snapshot in ``output`` (one of OUTPUT_FORMATS); ages are measured against ``now``
    (seconds since the epoch)."""
    if output == "json":
        return json.dumps(snapshot.document(), indent=2) + "\n"
    if output == "yaml":
        return str(yaml.safe_dump(snapshot.document(), sort_keys=False, default_flow_style=False))
    if output != "table":
        raise ValueError(f"unknown output {output!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    lines = [summary_line(snapshot, now=now), ""]
    lines += _table(
        ["TASKMANAGER", "STATE", "SLOTS", "NODE", "AGE", "IDLE", "PROBLEM"],
        [_taskmanager_row(tm, now=now) for tm in snapshot.taskmanagers],
    )
    lines.append("")
    lines += _table(
        ["JOB", "SLOTS", "FULFILLED", "WAITING", "REASON"],
        [_job_row(job, now=now) for job in snapshot.jobs],
    )
    return "\n".join(lines) + "\n"


def summary_line(snapshot: Snapshot, *, now: float) -> str:
    """One line: TaskManagers by state, slots, jobs and how long the oldest has waited."""
    status = snapshot.status
    counts = status.get("taskmanagers", {})
    waiting = [job for job in snapshot.jobs if not job.get("fulfilled", True)]
    oldest = min((_epoch(job.get("waiting_since")) or now for job in waiting), default=None)
    jobs = f"jobs: {status.get('jobs', len(snapshot.jobs))}, {len(waiting)} waiting"
    if oldest is not None:
        jobs += f" (longest {age(now - oldest)})"
    line = (
        "TaskManagers: "
        + ", ".join(f"{counts.get(state, 0)} {state}" for state in _STATES)
        + f"; slots: {status.get('slots_allocated', 0)} used, {status.get('slots_free', 0)} "
        f"free of {status.get('slots_total', 0)}; {jobs}; pending slot demand: "
        f"{status.get('pending_slot_demand', 0)}"
    )
    if status.get("starts_throttled"):
        line += "; new pods THROTTLED after start failures"
    return line


def age(seconds: float) -> str:
    """A duration the way kubectl shows ages: 7s, 4m10s, 3h12m, 5d2h."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def _taskmanager_row(tm: dict[str, Any], *, now: float) -> list[str]:
    return [
        str(tm["taskmanager_id"]),
        str(tm["state"]) + (" (spare)" if tm.get("kept_as_spare") else ""),
        f"{tm.get('slots_allocated', 0)}/{tm.get('slots_total', 0)}",
        tm.get("node_name") or "-",
        _since(tm.get("created_at"), now=now),
        _since(tm.get("idle_since"), now=now),
        _problem_text(tm.get("problem")),
    ]


def _job_row(job: dict[str, Any], *, now: float) -> list[str]:
    reason = job.get("unfulfilled_reason") or "-"
    if len(reason) > _REASON_WIDTH:
        reason = reason[: _REASON_WIDTH - 3] + "..."
    return [
        str(job["job_id"]),
        f"{job.get('slots_allocated', 0)}/{job.get('slots_required', 0)}",
        "yes" if job.get("fulfilled") else "no",
        _since(job.get("waiting_since"), now=now),
        reason,
    ]


def _since(timestamp: object, *, now: float) -> str:
    moment = _epoch(timestamp)
    return "-" if moment is None else age(now - moment)


def _epoch(timestamp: object) -> float | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return None


def _problem_text(problem: object) -> str:
    if not isinstance(problem, dict):
        return "-"
    text = f"{problem.get('reason', '')}: {problem.get('message', '')}"
    return text if len(text) <= _REASON_WIDTH else text[: _REASON_WIDTH - 3] + "..."


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return [header[0] + ": none"]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
