"""What kubectl shows of rmd: the pods' ``rmd.dev/state`` label and Kubernetes Events.

The engine (:mod:`rmd.driver`) hands every batch of the core's actions to
:meth:`KubeReporter.actions_applied` after applying it; the reporter works out which pods'
labels may have changed (their TaskManager changed state, registered, or got or lost slots)
and which notices are Events, and passes them on to the labeler
(:mod:`rmd.kube.statelabel`) and the Event recorder (:mod:`rmd.kube.events`). Neither waits:
nothing here slows allocation down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rmd.core.model import (
    Action,
    CreatePod,
    DeletePod,
    PodObservation,
    SlotsAllocated,
    SlotsFreed,
    TaskManagerChanged,
    TaskManagerRegistered,
    TaskManagerView,
)
from rmd.kube.eventcorrelation import EventDraft, InvolvedObject
from rmd.kube.eventreasons import created_event, notice_events
from rmd.kube.statelabel import PodStateLabeler, state_label_value, with_initial_state

EventSink = Callable[[EventDraft], None]


class KubeReporter:
    def __init__(
        self,
        *,
        labeler: PodStateLabeler,
        record_event: EventSink,
        taskmanager: Callable[[str], TaskManagerView | None],
        waiting_jobs: Callable[[], list[str]],
        deployment: InvolvedObject | None = None,
    ) -> None:
        self._labeler = labeler
        self._record_event = record_event
        self._taskmanager = taskmanager
        self._waiting_jobs = waiting_jobs
        self._deployment = deployment
        self._uids: dict[str, str] = {}

    def prepare_create(self, body: dict[str, Any]) -> dict[str, Any]:
        """The pod manifest as it is created: labelled ``pending`` already."""
        return with_initial_state(body)

    def pod_created(self, name: str, *, uid: str | None) -> None:
        if uid is not None:
            self._uids[name] = uid
        self._labeler.created(name)
        self._record_event(created_event(self._pod(name), waiting_jobs=self._waiting_jobs()))

    def pods_observed(self, pods: Iterable[PodObservation]) -> None:
        """Pods as the watch or a LIST shows them (before the core hears of them)."""
        for pod in pods:
            if pod.uid is not None:
                self._uids[pod.name] = pod.uid
            if pod.deleting:
                self._labeler.pod_deleting(pod.name)
            else:
                self._labeler.observed(pod.name, pod.state_label)

    def pod_gone(self, name: str) -> None:
        """The watch saw the pod deleted (after the core heard of it): forget it, whoever's
        it was (an orphan's too)."""
        self._uids.pop(name, None)
        self._labeler.forget(name)

    def actions_applied(self, actions: Sequence[Action]) -> None:
        touched: dict[str, None] = {}  # pods whose label may change, in order, once each
        gone: list[str] = []
        for action in actions:
            match action:
                case CreatePod() | DeletePod():
                    continue
                case TaskManagerChanged(new=None):
                    touched.pop(action.taskmanager_id, None)
                    gone.append(action.taskmanager_id)
                    self._labeler.forget(action.taskmanager_id)
                case TaskManagerChanged() | TaskManagerRegistered():
                    touched[action.taskmanager_id] = None
                case SlotsAllocated() | SlotsFreed():
                    for slot in action.slot_ids:
                        touched[slot.rpartition("/")[0]] = None
            for draft in notice_events(action, pod=self._pod, deployment=self._deployment):
                self._record_event(draft)
        for name in touched:
            view = self._taskmanager(name)
            if view is not None:
                self._labeler.want(name, state_label_value(view))
        for name in gone:
            self._uids.pop(name, None)

    async def before_delete(self, name: str) -> None:
        """rmd is about to delete the pod: its last label, ``releasing``."""
        await self._labeler.before_delete(name)

    def _pod(self, name: str) -> InvolvedObject:
        return InvolvedObject("Pod", name, self._uids.get(name))
