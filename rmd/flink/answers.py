"""Flink's REST answers (verified against Flink 2.3.0, tests/golden/flink/) as typed snapshots.

Pure: JSON already decoded in, frozen dataclasses out. Only the fields rmd needs are read;
anything else may change freely. A missing or mistyped field raises :class:`MalformedAnswer`
naming the endpoint and the field, never a KeyError/TypeError from deep inside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ApplicationSummary",
    "JobDetails",
    "JobSummary",
    "JobVertex",
    "MalformedAnswer",
    "ParallelismBounds",
    "TaskManagerUsage",
    "parse_applications_overview",
    "parse_job_details",
    "parse_jobs_overview",
    "parse_resource_requirements",
    "parse_taskmanager_details",
    "parse_taskmanagers",
    "scheduler_refuses_requirements",
]

TOP = ""  # "where" of the answer itself, in MalformedAnswer messages


class MalformedAnswer(ValueError):
    """A REST answer that does not have the shape rmd relies on."""

    def __init__(self, endpoint: str, problem: str) -> None:
        super().__init__(f"Flink's answer to GET {endpoint} is malformed: {problem}")
        self.endpoint = endpoint
        self.problem = problem


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One entry of ``GET /jobs/overview``."""

    job_id: str
    state: str  # RUNNING, CANCELED, ... (Flink's JobStatus)
    scheduler: str | None  # "Default", "Adaptive", ...; None when Flink does not say (1.x)


@dataclass(frozen=True, slots=True)
class ApplicationSummary:
    """One entry of ``GET /applications/overview`` (Flink 2.3+; 1.x answers 404)."""

    application_id: str
    name: str
    status: str  # CREATED, RUNNING, FAILING, FAILED, CANCELING, CANCELED, FINISHED


@dataclass(frozen=True, slots=True)
class JobVertex:
    vertex_id: str
    # None while the adaptive batch scheduler has not decided it (Flink answers -1).
    parallelism: int | None
    slot_sharing_group: str | None  # None when Flink does not say (1.x): one shared group


@dataclass(frozen=True, slots=True)
class JobDetails:
    """``GET /jobs/:id``: the state and the vertices with their slot-sharing groups."""

    job_id: str
    state: str
    scheduler: str | None
    vertices: tuple[JobVertex, ...]


@dataclass(frozen=True, slots=True)
class ParallelismBounds:
    """A vertex's entry in ``GET /jobs/:id/resource-requirements`` (adaptive scheduler)."""

    lower: int
    upper: int


@dataclass(frozen=True, slots=True)
class TaskManagerUsage:
    """A TaskManager's slots as Flink sees them.

    From ``GET /taskmanagers`` ``allocated_jobs`` is None (the list does not carry the
    allocated slots); ``GET /taskmanagers/:id`` gives the job of every allocated slot.
    """

    taskmanager_id: str
    slots_total: int
    slots_free: int
    allocated_jobs: tuple[str, ...] | None = None

    @property
    def busy(self) -> bool | None:
        """True when Flink uses a slot here, False when it certainly uses none, None when the
        list alone cannot tell (all slots free there: ask ``/taskmanagers/:id``)."""
        if self.slots_free < self.slots_total or self.allocated_jobs:
            return True
        if self.allocated_jobs is None:
            return None
        return False


# ---------------------------------------------------------------------------- parsers


def parse_jobs_overview(body: object) -> list[JobSummary]:
    endpoint = "/jobs/overview"
    jobs = _list(_object(body, endpoint, TOP), "jobs", endpoint, TOP)
    summaries: list[JobSummary] = []
    for index, item in enumerate(jobs):
        where = f"jobs[{index}]"
        job = _object(item, endpoint, where)
        summaries.append(
            JobSummary(
                job_id=_str(job, "jid", endpoint, where),
                state=_str(job, "state", endpoint, where),
                scheduler=_optional_str(job, "schedulerType", endpoint, where),
            )
        )
    return summaries


def parse_applications_overview(body: object) -> list[ApplicationSummary]:
    endpoint = "/applications/overview"
    applications = _list(_object(body, endpoint, TOP), "applications", endpoint, TOP)
    summaries: list[ApplicationSummary] = []
    for index, item in enumerate(applications):
        where = f"applications[{index}]"
        application = _object(item, endpoint, where)
        summaries.append(
            ApplicationSummary(
                application_id=_str(application, "id", endpoint, where),
                name=_optional_str(application, "name", endpoint, where) or "",
                status=_str(application, "status", endpoint, where),
            )
        )
    return summaries


def parse_job_details(body: object, *, job_id: str) -> JobDetails:
    endpoint = f"/jobs/{job_id}"
    job = _object(body, endpoint, TOP)
    answered_id = _str(job, "jid", endpoint, TOP)
    if answered_id != job_id:
        raise MalformedAnswer(endpoint, f"jid is {answered_id!r}, not the job asked for")
    vertices: list[JobVertex] = []
    for index, item in enumerate(_list(job, "vertices", endpoint, TOP)):
        where = f"vertices[{index}]"
        vertex = _object(item, endpoint, where)
        vertices.append(
            JobVertex(
                vertex_id=_str(vertex, "id", endpoint, where),
                parallelism=_parallelism(vertex, endpoint, where),
                slot_sharing_group=_optional_str(vertex, "slotSharingGroupId", endpoint, where),
            )
        )
    return JobDetails(
        job_id=job_id,
        state=_str(job, "state", endpoint, TOP),
        scheduler=_optional_str(job, "schedulerType", endpoint, TOP),
        vertices=tuple(vertices),
    )


def parse_resource_requirements(body: object, *, job_id: str) -> dict[str, ParallelismBounds]:
    endpoint = f"/jobs/{job_id}/resource-requirements"
    requirements = _object(body, endpoint, TOP)
    bounds: dict[str, ParallelismBounds] = {}
    for vertex_id, item in requirements.items():
        where = f"{vertex_id}.parallelism"
        parallelism = _object(
            _object(item, endpoint, str(vertex_id)).get("parallelism"), endpoint, where
        )
        lower = _int(parallelism, "lowerBound", endpoint, where, minimum=1)
        upper = _int(parallelism, "upperBound", endpoint, where, minimum=lower)
        bounds[str(vertex_id)] = ParallelismBounds(lower=lower, upper=upper)
    return bounds


def scheduler_refuses_requirements(status: int, body: object) -> bool:
    """The 500 the default scheduler answers to ``/jobs/:id/resource-requirements``."""
    if status != 500 or not isinstance(body, Mapping):
        return False
    errors = body.get("errors")
    if not isinstance(errors, list):
        return False
    return any(isinstance(e, str) and "UnsupportedOperationException" in e for e in errors)


def parse_taskmanagers(body: object) -> list[TaskManagerUsage]:
    endpoint = "/taskmanagers"
    items = _list(_object(body, endpoint, TOP), "taskmanagers", endpoint, TOP)
    return [
        _taskmanager(_object(item, endpoint, f"taskmanagers[{index}]"), endpoint, index=index)
        for index, item in enumerate(items)
    ]


def parse_taskmanager_details(body: object, *, taskmanager_id: str) -> TaskManagerUsage:
    endpoint = f"/taskmanagers/{taskmanager_id}"
    usage = _taskmanager(_object(body, endpoint, TOP), endpoint, index=None)
    if usage.taskmanager_id != taskmanager_id:
        raise MalformedAnswer(endpoint, f"id is {usage.taskmanager_id!r}, not the one asked for")
    return usage


def _taskmanager(item: Mapping[str, Any], endpoint: str, *, index: int | None) -> TaskManagerUsage:
    where = TOP if index is None else f"taskmanagers[{index}]"
    total = _int(item, "slotsNumber", endpoint, where, minimum=0)
    free = _int(item, "freeSlots", endpoint, where, minimum=0)
    if free > total:
        raise MalformedAnswer(
            endpoint, f"{where or 'the answer'} has freeSlots {free} > slotsNumber {total}"
        )
    jobs: tuple[str, ...] | None = None
    if index is None:
        slots = _list(item, "allocatedSlots", endpoint, where)
        jobs = tuple(
            _str(
                _object(slot, endpoint, f"allocatedSlots[{n}]"),
                "jobId",
                endpoint,
                f"allocatedSlots[{n}]",
            )
            for n, slot in enumerate(slots)
        )
    return TaskManagerUsage(
        taskmanager_id=_str(item, "id", endpoint, where),
        slots_total=total,
        slots_free=free,
        allocated_jobs=jobs,
    )


# ---------------------------------------------------------------------------- field readers


def _at(where: str, key: str) -> str:
    return key if where == TOP else f"{where}.{key}"


def _object(value: object, endpoint: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedAnswer(
            endpoint, f"{where or 'the answer'} is {_kind(value)}, expected a JSON object"
        )
    return value


def _list(value: Mapping[str, Any], key: str, endpoint: str, where: str) -> Sequence[Any]:
    found = value.get(key)
    if not isinstance(found, list):
        raise MalformedAnswer(endpoint, f"{_at(where, key)} is {_kind(found)}, expected a list")
    return found


def _str(value: Mapping[str, Any], key: str, endpoint: str, where: str) -> str:
    found = value.get(key)
    if not isinstance(found, str) or not found:
        raise MalformedAnswer(endpoint, f"{_at(where, key)} is {_kind(found)}, expected a string")
    return found


def _optional_str(value: Mapping[str, Any], key: str, endpoint: str, where: str) -> str | None:
    if value.get(key) is None:
        return None
    return _str(value, key, endpoint, where)


def _int(value: Mapping[str, Any], key: str, endpoint: str, where: str, *, minimum: int) -> int:
    found = value.get(key)
    if isinstance(found, bool) or not isinstance(found, int):
        raise MalformedAnswer(endpoint, f"{_at(where, key)} is {_kind(found)}, expected an integer")
    if found < minimum:
        raise MalformedAnswer(
            endpoint, f"{_at(where, key)} is {found}, expected at least {minimum}"
        )
    return found


def _parallelism(vertex: Mapping[str, Any], endpoint: str, where: str) -> int | None:
    parallelism = _int(vertex, "parallelism", endpoint, where, minimum=-1)
    if parallelism == 0:
        raise MalformedAnswer(
            endpoint, f"{_at(where, 'parallelism')} is 0, expected -1 or at least 1"
        )
    return None if parallelism < 0 else parallelism


def _kind(value: object) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return f"a JSON {'list' if isinstance(value, list) else 'object'}"
