"""Helpers shared by the allocator tests (no tests here).

``Harness`` wraps the REAL :class:`~rmd.core.allocator.Allocator` with a manual clock and a
few shortcuts that play the Kubernetes edge and the TaskManagers: confirm a create, show a
running pod, register, delete. Nothing of the allocator itself is replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import ManualClock
from rmd.core.model import (
    Action,
    CreatePod,
    DeletePod,
    PodObservation,
    ReleaseReason,
    TaskManagerState,
)

CLUSTER = "flink"
T = TypeVar("T")


def of_type(actions: Iterable[Action], kind: type[T]) -> list[T]:
    return [action for action in actions if isinstance(action, kind)]


def created(actions: Iterable[Action]) -> list[str]:
    return [action.name for action in of_type(actions, CreatePod)]


def deleted(actions: Iterable[Action]) -> dict[str, ReleaseReason]:
    return {action.name: action.reason for action in of_type(actions, DeletePod)}


def running(name: str, *, node: str = "node-1", ip: str = "10.0.0.1") -> PodObservation:
    return PodObservation(name=name, phase="Running", node_name=node, pod_ip=ip)


def tm_name(index: int, *, attempt: int = 1) -> str:
    return f"{CLUSTER}-taskmanager-{attempt}-{index}"


class Harness:
    def __init__(self, *, attempt: int = 1, **settings: Any) -> None:
        settings.setdefault("slots_per_taskmanager", 4)
        self.settings = AllocatorSettings(cluster_id=CLUSTER, **settings)
        self.clock = ManualClock()
        self.allocator = Allocator(self.settings, clock=self.clock, attempt=attempt)

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def advance(self, seconds: float) -> list[Action]:
        """Move the clock and fire what is due."""
        self.clock.advance(seconds)
        return self.allocator.tick()

    def start(self, names: Sequence[str], *, slots: int | None = None) -> list[Action]:
        """Create succeeded, pod running, TaskManager registered — for each name."""
        out: list[Action] = []
        for number, name in enumerate(names, start=1):
            out += self.allocator.create_succeeded(name)
            out += self.allocator.pod_observed(running(name, ip=f"10.0.0.{number}"))
            out += self.allocator.register(
                name,
                address=f"10.0.0.{number}:6122",
                slots=self.settings.slots_per_taskmanager if slots is None else slots,
            )
        return out

    def state(self, name: str) -> TaskManagerState:
        return self.allocator.taskmanager_view(name).state

    def states(self) -> dict[str, TaskManagerState]:
        return {view.taskmanager_id: view.state for view in self.allocator.taskmanager_views()}

    def job_slots(self, job_id: str) -> list[str]:
        return [slot.slot_id for slot in self.allocator.job_view(job_id).slots]

    def allocated_on(self, name: str) -> int:
        return self.allocator.taskmanager_view(name).slots_allocated

    def scale_up(self, job_id: str, slots: int) -> list[str]:
        """Declare and bring up every pod the declaration asks for; the new pods' names."""
        names = created(self.allocator.declare(job_id, slots))
        self.start(names)
        return names
