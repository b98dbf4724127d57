"""The JobView of API.md as the client returns it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rmd.client.errors import UnexpectedAnswer

__all__ = ["JobSlot", "JobView", "PodProblem"]


@dataclass(frozen=True, slots=True)
class JobSlot:
    slot_id: str
    taskmanager_id: str
    address: str | None


@dataclass(frozen=True, slots=True)
class PodProblem:
    """A pod of the job's TaskManagers that needs a human (image pull, unschedulable)."""

    taskmanager_id: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class JobView:
    job_id: str
    slots_required: int
    slots_allocated: int
    fulfilled: bool
    slots: tuple[JobSlot, ...]
    unfulfilled_reason: str | None = None  # why the job waits (slot cap, pod problems, ...)
    problems: tuple[PodProblem, ...] = ()

    @classmethod
    def from_json(cls, document: object) -> JobView:
        """Raises :class:`UnexpectedAnswer` naming the field that is missing or mistyped."""
        job = _mapping(document, "the JobView")
        return cls(
            job_id=_typed(job, "job_id", str),
            slots_required=_typed(job, "slots_required", int),
            slots_allocated=_typed(job, "slots_allocated", int),
            fulfilled=_typed(job, "fulfilled", bool),
            slots=tuple(
                JobSlot(
                    slot_id=_typed(slot, "slot_id", str),
                    taskmanager_id=_typed(slot, "taskmanager_id", str),
                    address=_typed(slot, "address", str, optional=True),
                )
                for slot in (_mapping(item, "a slot") for item in _typed(job, "slots", list))
            ),
            unfulfilled_reason=_typed(job, "unfulfilled_reason", str, optional=True),
            problems=tuple(
                PodProblem(
                    taskmanager_id=_typed(problem, "taskmanager_id", str),
                    reason=_typed(problem, "reason", str),
                    message=_typed(problem, "message", str),
                )
                for problem in (_mapping(item, "a problem") for item in job.get("problems") or [])
            ),
        )


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UnexpectedAnswer(f"{what} is not a JSON object: {value!r:.200}")
    return value


def _typed(document: Mapping[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = document.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UnexpectedAnswer(f"field {key!r} is {value!r:.100}, expected {kind.__name__}")
    return value
