"""The core's views as the JSON documents of API.md (plus the extra fields rmd adds)."""

from __future__ import annotations

import functools
import json
import zlib
from datetime import UTC, datetime
from typing import Any

from rmd.core.model import (
    JobSummary,
    JobView,
    ProblemView,
    SlotView,
    StatusView,
    TaskManagerState,
    TaskManagerView,
)

__all__ = [
    "job_etag",
    "job_json",
    "job_summary_json",
    "problem_json",
    "rfc3339",
    "status_json",
    "taskmanager_json",
]

JsonObject = dict[str, Any]


@functools.lru_cache(maxsize=8192)
def rfc3339(epoch_seconds: float) -> str:
    """Seconds since the epoch as an RFC 3339 UTC timestamp, e.g. ``2023-11-14T22:13:20.000Z``.

    Cached: a TaskManager's ``created_at`` and ``idle_since`` are the same in every
    heartbeat answer, and datetime formatting was a fifth of building one."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def problem_json(problem: ProblemView) -> JsonObject:
    return {
        "taskmanager_id": problem.taskmanager_id,
        "reason": problem.reason,
        "message": problem.message,
    }


def _job_slot_json(slot: SlotView) -> JsonObject:
    return {"slot_id": slot.slot_id, "taskmanager_id": slot.taskmanager_id, "address": slot.address}


def job_json(view: JobView) -> JsonObject:
    return {
        "job_id": view.job_id,
        "slots_required": view.slots_required,
        "slots_allocated": view.slots_allocated,
        "fulfilled": view.fulfilled,
        "slots": [_job_slot_json(slot) for slot in view.slots],
        "unfulfilled_reason": view.unfulfilled_reason,
        "problems": [problem_json(problem) for problem in view.problems],
        "waiting_since": _timestamp(view.waiting_since),
    }


def job_summary_json(view: JobSummary) -> JsonObject:
    """The compact JobView (``?slots=false``): every field but the slot list."""
    return {
        "job_id": view.job_id,
        "slots_required": view.slots_required,
        "slots_allocated": view.slots_allocated,
        "fulfilled": view.fulfilled,
        "unfulfilled_reason": view.unfulfilled_reason,
        "problems": [problem_json(problem) for problem in view.problems],
        "waiting_since": _timestamp(view.waiting_since),
    }


def job_etag(view: JobSummary, *, slots: bool, page: tuple[int, str | None] | None = None) -> str:
    """A strong ETag of the job's JSON: its version (requirement and slots) plus a digest of
    why it waits; the compact form has its own, and so has each page of the slot list
    (``page``: its ``slots_limit`` and ``slots_after``)."""
    why = json.dumps(
        [
            view.unfulfilled_reason,
            [problem_json(p) for p in view.problems],
            _timestamp(view.waiting_since),
        ]
    )
    digest = zlib.crc32(why.encode())
    form = "" if slots else ".compact"
    if page is not None:
        limit, after = page
        form = f".page{limit}.{zlib.crc32((after or '').encode()):08x}"
    return f'"{view.version}.{digest:08x}{form}"'


def _taskmanager_slot_json(slot: SlotView) -> JsonObject:
    return {"slot_id": slot.slot_id, "job_id": slot.job_id}


def taskmanager_json(view: TaskManagerView) -> JsonObject:
    return {
        "taskmanager_id": view.taskmanager_id,
        "state": view.state.value,
        "slots_total": view.slots_total,
        "slots_allocated": view.slots_allocated,
        "address": view.address,
        "slots": [_taskmanager_slot_json(slot) for slot in view.slots],
        "idle_since": None if view.idle_since is None else rfc3339(view.idle_since),
        "problem": None if view.problem is None else problem_json(view.problem),
        "pod_phase": view.pod_phase,
        "node_name": view.node_name,
        "kept_as_spare": view.kept_as_spare,
        "delete_waits_for_create": view.delete_waits_for_create,
        "created_at": _timestamp(view.created_at),
    }


def status_json(view: StatusView) -> JsonObject:
    return {
        "taskmanagers": {
            state.value: view.taskmanagers.get(state, 0) for state in TaskManagerState
        },
        "slots_total": view.slots_total,
        "slots_free": view.slots_free,
        "slots_allocated": view.slots_allocated,
        "jobs": view.jobs,
        "pending_slot_demand": view.pending_slot_demand,
        "starts_throttled": view.starts_throttled_until is not None,
        "starts_throttled_until": (
            None if view.starts_throttled_until is None else rfc3339(view.starts_throttled_until)
        ),
        "extra": dict(view.extra),
        "jobs_waiting": view.jobs_waiting,
        "oldest_wait_seconds": round(view.oldest_wait_seconds, 3),
        "pending_taskmanagers_by_reason": dict(view.pending_by_reason),
    }


def _timestamp(epoch_seconds: float | None) -> str | None:
    return None if epoch_seconds is None else rfc3339(epoch_seconds)
