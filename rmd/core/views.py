"""Read-only views of the allocator's records, and the arithmetic behind "why does it wait"."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rmd.core.model import SlotView, TaskManagerView
from rmd.core.slots import JobRecord, TaskManagerRecord, slot_id


def taskmanager_view(tm: TaskManagerRecord) -> TaskManagerView:
    """Every slot of a registered TaskManager (free ones with job None); none before."""
    slots = tuple(
        SlotView(slot_id(tm.name, index), tm.name, job_id, tm.address)
        for index, job_id in enumerate(tm.slot_jobs)
    )
    return TaskManagerView(
        taskmanager_id=tm.name,
        state=tm.state,
        slots_total=tm.slots_total,
        slots=slots if tm.is_registered else (),
        address=tm.address,
        idle_since=tm.idle_since_wall,
        problem=tm.problem,
        pod_phase=tm.pod_phase,
        node_name=tm.node_name,
    )


def job_slot_views(
    job: JobRecord, taskmanagers: Mapping[str, TaskManagerRecord]
) -> tuple[SlotView, ...]:
    """The job's slots in TaskManager creation order, then slot index."""
    views: list[SlotView] = []
    for name in sorted(job.slots, key=lambda name: taskmanagers[name].order):
        address = taskmanagers[name].address
        views.extend(
            SlotView(slot_id(name, index), name, job.job_id, address)
            for index in sorted(job.slots[name])
        )
    return tuple(views)


@dataclass(frozen=True, slots=True)
class JobShortfall:
    """Of a job's unmet slots: how many no existing or coming pod covers (they wait for pods
    yet to be created), and how many of those nothing can provide because of max_slots."""

    uncovered: int
    beyond_cap: int


def job_shortfalls(
    jobs: Iterable[JobRecord],
    live: Sequence[TaskManagerRecord],
    *,
    slots_per_taskmanager: int,
    max_slots: int | None,
) -> dict[str, JobShortfall]:
    """Walk the jobs first-come first-served over the free slots that exist, the slots on
    their way, and the slots max_slots still allows to create (whole TaskManagers only).

    ``live``: the requested, pending and registered TaskManagers.
    """
    existing = sum(tm.free for tm in live) + sum(
        tm.slots_total for tm in live if tm.is_coming and not tm.adopted
    )
    creatable: float = math.inf
    if max_slots is not None:
        used = sum(tm.slots_total for tm in live)
        creatable = max(0, max_slots - used) // slots_per_taskmanager * slots_per_taskmanager
    result: dict[str, JobShortfall] = {}
    for job in jobs:
        if not job.unmet:
            continue
        from_existing = min(job.unmet, existing)
        existing -= from_existing
        uncovered = job.unmet - from_existing
        from_new = int(min(uncovered, creatable))
        creatable -= from_new
        result[job.job_id] = JobShortfall(uncovered=uncovered, beyond_cap=uncovered - from_new)
    return result
