"""What the Kubernetes API server says about our pods, and what that means for TaskManagers.

:class:`PodTracker` names and starts new pods, and takes in everything the Kubernetes edge
reports: the answer to a create, a pod seen by the watch, a pod gone, a full LIST, and the
pods found at start-up. The state changes themselves go through
:class:`rmd.core.lifecycle.TaskManagerLifecycle`. Pods with our names that no TaskManager
owns are deleted as orphans.

Every method appends the actions it takes to ``out``; those returning ``bool`` say whether
anything changed (the allocator then reconciles).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from rmd.core.allocator_settings import AllocatorSettings
from rmd.core.clock import Clock
from rmd.core.lifecycle import FAILURE_WINDOW, PodFate, TaskManagerLifecycle
from rmd.core.model import (
    Action,
    CreatePod,
    CreateRetryScheduled,
    DeletePod,
    LossReason,
    PodObservation,
    PodProblem,
    ProblemView,
    ReleaseReason,
    TaskManagerState,
)
from rmd.core.naming import PodNameParts, PodNamer
from rmd.core.records import CreateRetry, TaskManagerIndex, TaskManagerRecord


class PodTracker:
    def __init__(
        self,
        settings: AllocatorSettings,
        *,
        clock: Clock,
        attempt: int,
        taskmanagers: TaskManagerIndex,
        lifecycle: TaskManagerLifecycle,
        rng: random.Random,
    ) -> None:
        self._settings = settings
        self._rng = rng  # jitter of the create retries' backoff
        self._clock = clock
        self._names = PodNamer(settings.cluster_id, attempt=attempt)
        self._taskmanagers = taskmanagers
        self._lifecycle = lifecycle
        self._orphans_deleting: set[str] = set()
        self._last_create_failure: ProblemView | None = None
        self._last_create_failure_at = -math.inf

    @property
    def attempt(self) -> int:
        return self._names.attempt

    @property
    def orphans_deleting(self) -> int:
        return len(self._orphans_deleting)

    def recent_create_failure(self) -> ProblemView | None:
        """The last failed pod create, while it is news (within the failure window)."""
        age = self._clock.monotonic() - self._last_create_failure_at
        return self._last_create_failure if age < FAILURE_WINDOW else None

    # ------------------------------------------------------------------ creates

    def start(self, out: list[Action]) -> None:
        """A new TaskManager: a fresh name, state requested, its pod created."""

        def taken(name: str) -> bool:
            return name in self._taskmanagers or name in self._orphans_deleting

        name, parts = self._names.next_name(taken=taken)
        tm = TaskManagerRecord(
            name=name,
            order=(parts.attempt, parts.index, name),
            state=TaskManagerState.REQUESTED,
            created_at=self._clock.monotonic(),
            slots_total=self._settings.slots_per_taskmanager,
        )
        out.append(self._taskmanagers.add(tm, reason="slot demand"))
        out.append(CreatePod(name))

    def create_succeeded(self, name: str, out: list[Action]) -> bool:
        tm = self._taskmanagers.get(name)
        if tm is None:
            return False
        self._confirm(tm)
        if tm.state is TaskManagerState.RELEASING:
            self._lifecycle.send_deferred_delete(tm, out)
            return False
        if tm.state is not TaskManagerState.REQUESTED:
            return False
        out.append(self._taskmanagers.set_state(tm, TaskManagerState.PENDING, reason="pod created"))
        return True

    def create_failed(
        self, name: str, *, reason: str, message: str, api_unavailable: bool, out: list[Action]
    ) -> bool:
        tm = self._taskmanagers.get(name)
        if tm is None:
            return False
        if tm.state is TaskManagerState.RELEASING:
            out.append(
                self._taskmanagers.forget(tm, reason="pod create failed after it was cancelled")
            )
        elif tm.confirmed_at is not None:
            pass  # the watch has seen the pod: it exists, whatever the answer to its create
        elif api_unavailable:
            self._retry_create(tm, ProblemView(name, reason, message), out)
        elif tm.is_coming:
            self._last_create_failure = ProblemView(name, reason, message)
            self._last_create_failure_at = self._clock.monotonic()
            self._lifecycle.lose(
                tm,
                LossReason.CREATE_FAILED,
                start_failure=f"pod create failed: {reason}: {message}",
                pod=PodFate.GONE,
                out=out,
            )
        return True

    def _retry_create(self, tm: TaskManagerRecord, error: ProblemView, out: list[Action]) -> None:
        """Send the same create again after a backoff: the same name, so a create that did
        get through meanwhile is taken as done (409 for our own pod), never a second pod."""
        tm.create_retries += 1
        settings = self._settings
        ceiling = min(
            settings.create_retry_max, settings.create_retry_base * 2 ** (tm.create_retries - 1)
        )
        delay = ceiling * self._rng.uniform(0.5, 1.0)
        tm.create_retry = CreateRetry(at=self._clock.monotonic() + delay, error=error)
        self._taskmanagers.touch(tm)
        out.append(CreateRetryScheduled(tm.name, error.reason, error.message, retry_in=delay))

    def send_create_again(self, tm: TaskManagerRecord, out: list[Action]) -> None:
        """Its create retry is due (and pod starts are not paused): send the same create."""
        tm.create_retry = None
        tm.created_at = self._clock.monotonic()  # the registration timeout counts from now
        self._taskmanagers.touch(tm)
        out.append(CreatePod(tm.name))

    # ------------------------------------------------------------------ the watch

    def pod_observed(self, pod: PodObservation, out: list[Action]) -> None:
        parts = self._names.parse(pod.name)
        if parts is None:
            return
        self._names.reserve(parts)
        tm = self._taskmanagers.get(pod.name)
        if tm is None:
            if pod.name not in self._orphans_deleting and not pod.deleting:
                self._orphans_deleting.add(pod.name)
                out.append(DeletePod(pod.name, ReleaseReason.ORPHAN))
            return
        self._confirm(tm)
        tm.pod_phase = pod.phase
        tm.node_name = pod.node_name
        if tm.state is TaskManagerState.RELEASING:
            if not pod.deleting:
                self._lifecycle.send_deferred_delete(tm, out)
            return
        if pod.deleting:
            self._lifecycle.lose(
                tm, LossReason.POD_DELETED, start_failure=None, pod=PodFate.BEING_DELETED, out=out
            )
            return
        if pod.finished:
            if pod.phase in ("Failed", "Succeeded"):
                loss, detail = LossReason.POD_FAILED, f"pod phase {pod.phase}"
            else:
                loss = LossReason.CONTAINER_TERMINATED
                detail = f"container terminated with exit code {pod.terminated_exit_code}"
            self._lifecycle.lose(tm, loss, start_failure=detail, pod=ReleaseReason.FAILED, out=out)
            return
        if tm.state is TaskManagerState.REQUESTED:
            out.append(
                self._taskmanagers.set_state(tm, TaskManagerState.PENDING, reason="pod observed")
            )
        if tm.is_registered:
            tm.problem = None
        else:
            self._note_problem(tm, pod, out)

    def pod_deleted(self, name: str, out: list[Action]) -> bool:
        self._orphans_deleting.discard(name)
        tm = self._taskmanagers.get(name)
        if tm is None:
            return False
        self._lifecycle.pod_gone(tm, LossReason.POD_DELETED, out)
        return True

    def resync(
        self, pods: Sequence[PodObservation], *, listed_at: float | None, out: list[Action]
    ) -> None:
        """See :meth:`rmd.core.allocator.Allocator.resync`."""
        present = {pod.name: pod for pod in pods}
        self._orphans_deleting &= set(present)
        for tm in self._taskmanagers:
            if tm.name in present or tm.state is TaskManagerState.REQUESTED:
                continue
            if listed_at is not None and (tm.confirmed_at is None or tm.confirmed_at > listed_at):
                continue
            self._lifecycle.pod_gone(tm, LossReason.POD_MISSING, out)
        for pod in pods:
            going = self._taskmanagers.get(pod.name)
            if (
                going is not None
                and going.state is TaskManagerState.RELEASING
                and going.delete_when_created is None
                and going.release_reason is not None
                and not pod.deleting
            ):
                out.append(DeletePod(going.name, going.release_reason, resent=True))
            self.pod_observed(pod, out)

    def _confirm(self, tm: TaskManagerRecord) -> None:
        tm.confirm(now=self._clock.monotonic())
        self._taskmanagers.touch(tm)  # a create retry given up: the registration timer runs

    def _note_problem(self, tm: TaskManagerRecord, pod: PodObservation, out: list[Action]) -> None:
        if pod.waiting_problem is not None:
            reason, message = pod.waiting_problem
        elif pod.unschedulable_message is not None:
            reason, message = "Unschedulable", pod.unschedulable_message
        else:
            tm.problem = None
            return
        tm.problem = ProblemView(tm.name, reason, message)
        if reason not in tm.reported_problems:
            tm.reported_problems.add(reason)
            out.append(PodProblem(tm.name, reason, message))

    # ------------------------------------------------------------------ start-up

    def adopt(self, pods: Sequence[PodObservation], out: list[Action]) -> None:
        """See :meth:`rmd.core.allocator.Allocator.adopt`."""
        now = self._clock.monotonic()
        highest_attempt = 0
        for pod in pods:
            parts = self._names.parse(pod.name)
            if parts is None:
                continue
            highest_attempt = max(highest_attempt, parts.attempt)
            self._names.reserve(parts)
            if pod.name in self._taskmanagers:
                self.pod_observed(pod, out)
                continue
            self._adopt_pod(pod, parts, now=now, out=out)
        self._names.move_past(highest_attempt)

    def _adopt_pod(
        self, pod: PodObservation, parts: PodNameParts, *, now: float, out: list[Action]
    ) -> None:
        delete_reason: ReleaseReason | None = None
        if pod.finished:
            delete_reason = ReleaseReason.FAILED
        elif not pod.scheduled:
            delete_reason = ReleaseReason.UNSCHEDULABLE
        live = delete_reason is None and not pod.deleting
        tm = TaskManagerRecord(
            name=pod.name,
            order=(parts.attempt, parts.index, pod.name),
            state=TaskManagerState.PENDING if live else TaskManagerState.RELEASING,
            created_at=now,
            slots_total=self._settings.slots_per_taskmanager,
            adopted=True,
            confirmed_at=now,
            pod_phase=pod.phase,
            node_name=pod.node_name,
        )
        if pod.deleting:
            out.append(self._taskmanagers.add(tm, reason="recovered while deleting"))
        elif delete_reason is not None:
            out.append(self._taskmanagers.add(tm, reason=f"recovered {delete_reason}"))
            tm.release_reason = delete_reason
            out.append(DeletePod(tm.name, delete_reason))
        else:
            out.append(self._taskmanagers.add(tm, reason="recovered"))
            self._note_problem(tm, pod, out)
