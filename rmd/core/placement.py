"""Which slot goes to which job: the slot-placement rules of the allocator.

Allocation packs: jobs are served first-come first-served, each on the busiest registered
TaskManagers first, so the others stay idle and can be released. Freeing spreads the other
way: a job scaling down gives up slots on the TaskManagers it uses least, newest first, so
whole TaskManagers become idle. Every function keeps the records consistent (both sides of a
slot, the jobs' waiting demand, the TaskManagers' idle time) and describes what it did as
notices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rmd.core.model import SlotsAllocated, SlotsFreed
from rmd.core.records import JobRecord, TaskManagerIndex, TaskManagerRecord, slot_id


def allocate_waiting(
    jobs: Iterable[JobRecord],
    registered: Iterable[TaskManagerRecord],
    *,
    capacity: int,
    now: float,
    wall: float,
    held_back: Mapping[str, int] | None = None,
) -> list[SlotsAllocated]:
    """Give free slots of ``registered`` TaskManagers to the jobs' waiting demand, at most
    ``capacity`` slots in all (what the slot cap allows). ``held_back``: per job, waiting
    demand that is not to be served here (it waits for the TaskManagers that held its slots
    before a restart)."""
    held = held_back or {}

    def waiting(job: JobRecord) -> int:
        return job.unmet - held.get(job.job_id, 0)

    waiting_jobs = [job for job in jobs if waiting(job) > 0]
    if not waiting_jobs or capacity <= 0:
        return []
    candidates = sorted(
        (tm for tm in registered if len(tm.slot_jobs) > tm.allocated),  # free slots
        key=lambda tm: (-tm.allocated, tm.order),
    )
    allocated: list[SlotsAllocated] = []
    position = 0
    for job in waiting_jobs:
        slot_ids: list[str] = []
        waited: list[float] = []
        while waiting(job) > 0 and capacity > 0 and position < len(candidates):
            tm = candidates[position]
            if tm.free == 0:
                position += 1
                continue
            index = tm.take_slot(job.job_id)
            waiting_since = job.add_slot(tm.name, index)
            slot_ids.append(slot_id(tm.name, index))
            waited.append(now - waiting_since)
            capacity -= 1
            tm.refresh_idle(now=now, wall=wall)
        if slot_ids:
            allocated.append(SlotsAllocated(job.job_id, tuple(slot_ids), tuple(waited)))
    return allocated


def free_job_slots(
    job: JobRecord,
    taskmanagers: TaskManagerIndex,
    *,
    count: int,
    reason: str,
    now: float,
    wall: float,
) -> SlotsFreed | None:
    """Free ``count`` of the job's slots, on the TaskManagers with the fewest allocated slots
    first (newest first among equals); None when ``count`` is not positive."""
    if count <= 0:
        return None
    names = sorted(job.slots, key=lambda name: taskmanagers[name].order, reverse=True)
    names.sort(key=lambda name: taskmanagers[name].allocated)
    freed: list[str] = []
    for name in names:
        tm = taskmanagers[name]
        for index in sorted(job.slots[name], reverse=True):
            if len(freed) == count:
                break
            tm.release_slot(index)
            job.remove_slot(name, index, now=now)
            freed.append(slot_id(name, index))
        tm.refresh_idle(now=now, wall=wall)
        if len(freed) == count:
            break
    return SlotsFreed(job.job_id, tuple(freed), reason)


def free_taskmanager_slots(
    tm: TaskManagerRecord,
    jobs: Mapping[str, JobRecord],
    *,
    reason: str,
    now: float,
    wall: float,
) -> list[SlotsFreed]:
    """Free every slot of ``tm``; the demand goes back to the jobs (one notice per job)."""
    freed: dict[str, list[str]] = {}
    for index, job_id in enumerate(tm.slot_jobs):
        if job_id is None:
            continue
        tm.release_slot(index)
        jobs[job_id].remove_slot(tm.name, index, now=now)
        freed.setdefault(job_id, []).append(slot_id(tm.name, index))
    tm.refresh_idle(now=now, wall=wall)
    return [SlotsFreed(job_id, tuple(slot_ids), reason) for job_id, slot_ids in freed.items()]


def restore_slots(
    tm: TaskManagerRecord,
    jobs: Mapping[str, JobRecord],
    held: Mapping[int, str],
    *,
    now: float,
    wall: float,
) -> list[SlotsAllocated]:
    """Give a TaskManager that registered again after a restart its slots back: slot
    ``index`` to the job that held it (``held``), if that job still waits for a slot."""
    given: dict[str, list[str]] = {}
    waited: dict[str, list[float]] = {}
    for index, job_id in sorted(held.items()):
        job = jobs.get(job_id)
        if job is None or not job.unmet or index >= len(tm.slot_jobs):
            continue
        if tm.slot_jobs[index] is not None:
            continue
        tm.slot_jobs[index] = job_id
        tm.allocated += 1
        waiting_since = job.add_slot(tm.name, index)
        given.setdefault(job_id, []).append(slot_id(tm.name, index))
        waited.setdefault(job_id, []).append(now - waiting_since)
    tm.refresh_idle(now=now, wall=wall)
    return [
        SlotsAllocated(job_id, tuple(slot_ids), tuple(waited[job_id]))
        for job_id, slot_ids in given.items()
    ]
