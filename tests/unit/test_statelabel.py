"""The rmd.dev/state label: which value for which TaskManager, at most one patch per change,
coalescing, retries, and no patch to a pod being deleted. The pod gateway's patch is faked
(recorded, held or failed with the gateway's own error); the allocator is the real one."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping

import pytest

from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import ManualClock
from rmd.core.model import Action, PodObservation, TaskManagerView, UnknownTaskManager
from rmd.kube.eventcorrelation import EventDraft
from rmd.kube.pods import PodPatchError
from rmd.kube.reporter import KubeReporter
from rmd.kube.statelabel import STATE_LABEL, PodStateLabeler, with_initial_state
from rmd.retry import Backoff, Pacing, RetryPolicy
from tests.support.waiting import eventually_true


class RecordingPatch:
    """Stands in for PodGateway.patch_labels: records each patch; can hold, fail or 404."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.errors: list[PodPatchError] = []
        self.gone: set[str] = set()

    async def __call__(self, name: str, labels: Mapping[str, str]) -> bool:
        await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        if name in self.gone:
            return False
        self.sent.append((name, labels[STATE_LABEL]))
        return True

    def values(self, name: str) -> list[str]:
        return [value for pod, value in self.sent if pod == name]


FAST = RetryPolicy(backoff=Backoff(base=0.001, cap=0.002))


@pytest.fixture
async def labeler_and_patch() -> AsyncIterator[tuple[PodStateLabeler, RecordingPatch]]:
    patch = RecordingPatch()
    results: list[str] = []
    labeler = PodStateLabeler(
        patch_labels=patch,
        policy=FAST,
        pacing=Pacing(uniform=random.Random(3).random),
        on_patch=results.append,
    )
    try:
        yield labeler, patch
    finally:
        await labeler.close()


async def settled(labeler: PodStateLabeler, name: str, value: str) -> None:
    await eventually_true(
        lambda: labeler.written(name) == value, what=f"{name} labelled {value}", timeout=5
    )


async def test_a_created_pod_costs_no_patch_for_pending(
    labeler_and_patch: tuple[PodStateLabeler, RecordingPatch],
) -> None:
    labeler, patch = labeler_and_patch
    body = with_initial_state({"metadata": {"name": "p", "labels": {"app": "c"}}})
    assert body["metadata"]["labels"] == {"app": "c", STATE_LABEL: "pending"}
    labeler.created("p")
    labeler.want("p", "pending")
    labeler.want("p", "idle")
    await settled(labeler, "p", "idle")
    labeler.want("p", "idle")  # no change: no patch
    await asyncio.sleep(0)
    assert patch.sent == [("p", "idle")]


async def test_a_pod_the_watch_shows_before_its_create_answers_costs_no_patch_for_pending(
    labeler_and_patch: tuple[PodStateLabeler, RecordingPatch],
) -> None:
    labeler, patch = labeler_and_patch
    labeler.observed("p", "pending")  # the watch's ADDED came first (seen in CI)
    labeler.want("p", "pending")
    labeler.created("p")
    labeler.observed("p", "pending")  # a later, older view changes nothing written
    labeler.want("p", "registered")
    await settled(labeler, "p", "registered")
    labeler.observed("p", "pending")  # a stale event: "registered" stays what was written
    labeler.want("p", "registered")
    await asyncio.sleep(0)
    assert patch.sent == [("p", "registered")]


async def test_a_change_superseded_before_its_patch_went_out_is_never_sent(
    labeler_and_patch: tuple[PodStateLabeler, RecordingPatch],
) -> None:
    labeler, patch = labeler_and_patch
    labeler.created("p")
    patch.gate.clear()  # the first patch is in flight and held
    labeler.want("p", "idle")
    await asyncio.sleep(0)
    labeler.want("p", "registered")
    labeler.want("p", "idle")
    labeler.want("p", "registered")
    patch.gate.set()
    await settled(labeler, "p", "registered")
    assert patch.values("p") == ["idle", "registered"]  # the three changes after: one patch


async def test_a_failed_patch_is_retried_and_a_gone_pod_is_not(
    labeler_and_patch: tuple[PodStateLabeler, RecordingPatch],
) -> None:
    labeler, patch = labeler_and_patch
    patch.errors = [
        PodPatchError("ServiceUnavailable", "down", retriable=True, status=503),
        PodPatchError("ConnectionError", "refused", retriable=True),
    ]
    labeler.created("p")
    labeler.want("p", "idle")
    await settled(labeler, "p", "idle")
    assert patch.values("p") == ["idle"]
    patch.gone.add("q")
    labeler.created("q")
    labeler.want("q", "idle")
    await eventually_true(lambda: not labeler.sending("q"), what="q's worker ends", timeout=5)
    labeler.want("q", "registered")  # gone: never patched again
    await asyncio.sleep(0.01)
    assert patch.values("q") == []


async def test_a_refused_patch_is_not_retried(
    labeler_and_patch: tuple[PodStateLabeler, RecordingPatch],
) -> None:
    labeler, patch = labeler_and_patch
    patch.errors = [PodPatchError("Forbidden", "no patch on pods", retriable=False, status=403)]
    labeler.created("p")
    labeler.want("p", "idle")
    await eventually_true(lambda: not labeler.sending("p"), what="worker ends", timeout=5)
    assert patch.sent == []
    assert labeler.written("p") == "pending"


async def test_releasing_is_written_before_the_delete_and_nothing_after(
    labeler_and_patch: tuple[PodStateLabeler, RecordingPatch],
) -> None:
    labeler, patch = labeler_and_patch
    labeler.created("p")
    await labeler.before_delete("p")
    assert patch.values("p") == ["releasing"]
    labeler.want("p", "idle")
    await asyncio.sleep(0.01)
    assert patch.values("p") == ["releasing"]
    labeler.created("r")
    labeler.pod_deleting("r")  # someone else deletes it: no patch at all
    labeler.want("r", "releasing")
    await labeler.before_delete("r")
    assert patch.values("r") == []


# ---------------------------------------------------------------- the reporter over the core


class Reporting:
    """The real allocator, its actions handed to a KubeReporter as the engine hands them."""

    def __init__(self, labeler: PodStateLabeler) -> None:
        self.clock = ManualClock()
        self.allocator = Allocator(
            AllocatorSettings(cluster_id="c", slots_per_taskmanager=2, idle_timeout=30.0),
            clock=self.clock,
        )
        self.events: list[EventDraft] = []
        self.reporter = KubeReporter(
            labeler=labeler,
            record_event=self.events.append,
            taskmanager=self._view,
            waiting_jobs=self.allocator.jobs_waiting,
        )

    def _view(self, name: str) -> TaskManagerView | None:
        try:
            return self.allocator.taskmanager_view(name)
        except UnknownTaskManager:
            return None

    def apply(self, actions: list[Action]) -> None:
        self.reporter.actions_applied(actions)


async def test_labels_follow_the_taskmanager_through_its_life(
    labeler_and_patch: tuple[PodStateLabeler, RecordingPatch],
) -> None:
    labeler, patch = labeler_and_patch
    world = Reporting(labeler)
    allocator = world.allocator
    world.apply(allocator.declare("j", 2))
    (name,) = [v.taskmanager_id for v in allocator.taskmanager_views()]
    world.reporter.pod_created(name, uid="u-1")
    world.apply(allocator.create_succeeded(name))
    world.apply(allocator.pod_observed(PodObservation(name, node_name="n", uid="u-1")))
    await asyncio.sleep(0.01)
    assert patch.values(name) == []  # pending went out with the create
    world.apply(allocator.register(name, address="a:1", slots=2))
    await settled(labeler, name, "registered")  # its slots went to the job at once
    world.apply(allocator.declare("j", 0))
    await settled(labeler, name, "idle")
    world.clock.advance(31)
    world.apply(allocator.tick())  # idle past the timeout: released
    await world.reporter.before_delete(name)
    assert patch.values(name) == ["registered", "idle", "releasing"]
    reasons = [(e.reason, e.involved.name, e.involved.uid) for e in world.events]
    assert reasons == [
        ("TaskManagerCreated", name, "u-1"),
        ("TaskManagerRegistered", name, "u-1"),
        ("IdleReleased", name, "u-1"),
    ]
    assert "job(s) j" in world.events[0].message
    world.reporter.pods_observed([PodObservation("orphan", deleting=True, uid="u-9")])
    world.reporter.pod_gone("orphan")  # a pod no TaskManager owned: nothing kept of it
    world.apply(allocator.pod_deleted(name))
    world.reporter.pod_gone(name)
    assert (labeler.written(name), labeler.written("orphan")) == (None, None)
    assert not labeler.sending(name)
