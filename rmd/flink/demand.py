"""What Flink's jobs need, from their REST snapshots: slots per job, declarations, removals.

Pure: snapshots in (:mod:`rmd.flink.answers`), numbers and plans out.

A job needs, per slot-sharing group, as many slots as the largest parallelism among the
group's vertices, summed over its groups (Flink's slot sharing: one slot holds one subtask
of every vertex of its group). Under the default scheduler that parallelism is the vertex's;
under the adaptive scheduler it is the upper bound of its resource requirements (what the
job rescales up to when slots are there).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rmd.flink.answers import JobSummary, JobVertex, ParallelismBounds

__all__ = [
    "FollowPlan",
    "JobProblem",
    "ProblemReason",
    "RequirementsSource",
    "cap_problem",
    "is_terminal",
    "plan_follow",
    "requirements_source",
    "slots_needed",
]

# Flink's JobStatus values after which a job holds no slots in this JobManager: the globally
# terminal ones, and SUSPENDED (the JobManager gave the job up, e.g. lost leadership).
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})

# schedulerType in /jobs/overview and /jobs/:id (Flink 2.x).
DEFAULT_SCHEDULERS = frozenset({"Default", "AdaptiveBatch"})  # parallelism of the vertices
ADAPTIVE_SCHEDULER = "Adaptive"  # upper bounds of /jobs/:id/resource-requirements


class ProblemReason(enum.StrEnum):
    """Bad input from Flink's side. Used as a metric label."""

    ABOVE_SLOT_CAP = "above-slot-cap"  # more than slotmanager.number-of-slots.max
    UNKNOWN_SCHEDULER = "unknown-scheduler-answer"
    MALFORMED = "malformed-answer"


@dataclass(frozen=True, slots=True)
class JobProblem:
    job_id: str
    reason: ProblemReason
    detail: str


class RequirementsSource(enum.StrEnum):
    VERTICES = "vertices"  # the parallelism in /jobs/:id
    RESOURCE_REQUIREMENTS = "resource-requirements"  # the adaptive scheduler's upper bounds
    PROBE = "probe"  # Flink does not name the scheduler (1.x): ask, a 500 means "default"


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES


def requirements_source(scheduler: str | None) -> RequirementsSource:
    if scheduler is None:
        return RequirementsSource.PROBE
    if scheduler == ADAPTIVE_SCHEDULER:
        return RequirementsSource.RESOURCE_REQUIREMENTS
    return RequirementsSource.VERTICES  # the default ones, and the fallback for unknown ones


def slots_needed(
    vertices: Iterable[JobVertex], bounds: Mapping[str, ParallelismBounds] | None = None
) -> int:
    """Slots for one job: per slot-sharing group the largest parallelism, summed.

    With ``bounds`` (adaptive scheduler) a vertex counts with its upper bound; vertices
    without a bound, and with ``bounds`` None every vertex, count with their parallelism.
    Vertices whose parallelism is not decided yet count with 0 (the job re-declares when it
    is). Vertices without a group id share one group (Flink 1.x does not report the ids).
    """
    largest: dict[str | None, int] = {}
    for vertex in vertices:
        bound = None if bounds is None else bounds.get(vertex.vertex_id)
        parallelism = vertex.parallelism if bound is None else bound.upper
        if parallelism is None:
            continue
        group = vertex.slot_sharing_group
        largest[group] = max(largest.get(group, 0), parallelism)
    return sum(largest.values())


def cap_problem(job_id: str, slots: int, *, max_slots: int | None) -> JobProblem | None:
    if max_slots is None or slots <= max_slots:
        return None
    return JobProblem(
        job_id,
        ProblemReason.ABOVE_SLOT_CAP,
        f"Flink job {job_id} needs {slots} slots, more than slotmanager.number-of-slots.max "
        f"{max_slots}; it gets at most {max_slots} and stays unfulfilled: lower its "
        "parallelism or raise slotmanager.number-of-slots.max",
    )


@dataclass(frozen=True, slots=True)
class FollowPlan:
    declare: dict[str, int] = field(default_factory=dict)  # job id -> total slots
    remove: dict[str, str] = field(default_factory=dict)  # job id -> why

    def __bool__(self) -> bool:
        return bool(self.declare or self.remove)


def plan_follow(
    *, followed: Mapping[str, int], jobs: Sequence[JobSummary], demands: Mapping[str, int]
) -> FollowPlan:
    """What to tell the allocator after one complete ``/jobs/overview``.

    ``followed``: the demand declared so far per job; ``demands``: the demand read now for
    live jobs (a live job missing here keeps its last declaration: no information is no
    change). Terminal jobs and followed jobs that left the overview are removed.
    """
    plan = FollowPlan()
    listed: set[str] = set()
    for job in jobs:
        listed.add(job.job_id)
        if is_terminal(job.state):
            if job.job_id in followed:
                plan.remove[job.job_id] = f"job {job.state}"
        elif job.job_id in demands and demands[job.job_id] != followed.get(job.job_id):
            plan.declare[job.job_id] = demands[job.job_id]
    for job_id in followed:
        if job_id not in listed:
            plan.remove[job_id] = "job no longer listed by Flink"
    return plan
