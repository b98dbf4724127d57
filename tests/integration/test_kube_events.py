"""The Event writer against the real API server, through the fault proxy: one Event object per
series with its count patched, drops (counted) while the API server is unavailable, a
timeout on every write, at most ``max_parallel`` writes in flight, and Events last in the pod
gateway's limit toward the API server."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable

import pytest
from kubernetes_asyncio import client

from rmd.core.clock import SystemClock
from rmd.kube.eventcorrelation import EventCorrelator, EventDraft, InvolvedObject
from rmd.kube.events import EventRecorder
from rmd.kube.priorityslots import Priority, PrioritySlots
from tests.conftest import REQUEST_TIMEOUT
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually_true

pytestmark = pytest.mark.integration

EVENTS_PATH = r"/events(/[^/]+)?$"


class Outcomes:
    def __init__(self) -> None:
        self.written: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.dropped_at: list[float] = []

    def write(self, kind: str) -> None:
        self.written[kind] += 1

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        self.dropped_at.append(time.monotonic())


RecorderFactory = Callable[..., tuple[EventRecorder, Outcomes]]


@pytest.fixture
async def make_recorder(
    proxied_api: client.ApiClient, namespace: str
) -> AsyncIterator[RecorderFactory]:
    """Event writers through the proxy (1 s timeout, 2 in flight), closed at the end."""
    made: list[EventRecorder] = []

    def make(
        *, max_queued: int = 512, api_slots: PrioritySlots | None = None
    ) -> tuple[EventRecorder, Outcomes]:
        outcomes = Outcomes()
        recorder = EventRecorder(
            proxied_api,
            namespace=namespace,
            correlator=EventCorrelator(clock=SystemClock()),
            clock=SystemClock(),
            instance="test",
            request_timeout=1.0,
            max_parallel=2,
            max_queued=max_queued,
            api_slots=api_slots,
            on_written=outcomes.write,
            on_dropped=outcomes.drop,
        )
        made.append(recorder)
        return recorder, outcomes

    try:
        yield make
    finally:
        for recorder in made:
            await recorder.close()


def lost(pod: str = "tm-1") -> EventDraft:
    return EventDraft(InvolvedObject("Pod", pod, None), "TaskManagerLost", "gone", type="Warning")


async def events_of(api: client.ApiClient, namespace: str) -> list[client.CoreV1Event]:
    listed = await client.CoreV1Api(api).list_namespaced_event(
        namespace, _request_timeout=REQUEST_TIMEOUT
    )
    return list(listed.items)


async def test_unavailable_api_drops_and_counts_then_one_event_is_created_and_patched(
    proxy: FaultProxy,
    kube_api: client.ApiClient,
    namespace: str,
    make_recorder: RecorderFactory,
) -> None:
    recorder, outcomes = make_recorder()
    proxy.inject(method="POST", path_regex=EVENTS_PATH, status=503, times=1)
    recorder.record(lost())  # returns at once; written (here: dropped) in the background
    await eventually_true(lambda: outcomes.dropped["server-error"] == 1, what="drop counted")
    assert await events_of(kube_api, namespace) == []

    recorder.record(lost())  # the same series: created now, with the count it has (2)
    await eventually_true(lambda: outcomes.written["create"] == 1, what="created")
    recorder.record(lost())
    await eventually_true(lambda: outcomes.written["patch"] == 1, what="patched")
    (event,) = await events_of(kube_api, namespace)
    assert (event.reason, event.count, event.type) == ("TaskManagerLost", 3, "Warning")
    assert event.source.component == "rmd"
    assert event.involved_object.name == "tm-1"
    assert event.reporting_component == "rmd.dev/daemon"
    patches = proxy.requests_matching(method="PATCH", path_regex=EVENTS_PATH)
    assert [request.status for request in patches] == [200]


async def test_a_slow_api_server_sees_at_most_max_parallel_writes_each_timed_out(
    proxy: FaultProxy,
    namespace: str,
    make_recorder: RecorderFactory,
) -> None:
    recorder, outcomes = make_recorder()
    # Each POST is answered after 2 s: the writer's 1 s timeout ends every one first.
    proxy.inject(method="POST", path_regex=EVENTS_PATH, status=503, times=None, delay=2.0)
    for number in range(6):
        recorder.record(lost(f"tm-{number}"))
    started = time.monotonic()
    await eventually_true(
        lambda: outcomes.dropped["timeout"] == 6, what="six writes timed out", timeout=15
    )
    # Three rounds of two, a timeout (1 s) apart: never more than two writes in flight. (The
    # proxy cannot tell: it records a request when it answers, and these clients are gone.)
    drops = outcomes.dropped_at
    for first in drops:
        assert sum(1 for at in drops if first <= at < first + 0.5) <= 2, drops
    assert drops[0] - started >= 0.9
    assert drops[-1] - drops[0] >= 1.5


async def test_writes_beyond_the_queue_are_dropped_at_once(
    proxy: FaultProxy, make_recorder: RecorderFactory
) -> None:
    recorder, outcomes = make_recorder(max_queued=2)
    proxy.inject(method="POST", path_regex=EVENTS_PATH, status=503, times=None, delay=2.0)
    for number in range(5):
        recorder.record(lost(f"tm-{number}"))
    assert outcomes.dropped["queue-full"] == 3  # before any write was sent
    await eventually_true(
        lambda: outcomes.dropped["timeout"] == 2, what="the two queued timed out", timeout=15
    )


async def test_events_wait_while_pod_writes_hold_or_wait_for_the_shared_limit(
    kube_api: client.ApiClient,
    namespace: str,
    make_recorder: RecorderFactory,
) -> None:
    api_slots = PrioritySlots(1)  # rmd.kubernetes.max-parallel-requests: 1
    recorder, outcomes = make_recorder(api_slots=api_slots)
    create_may_end = asyncio.Event()
    label_may_end = asyncio.Event()
    order: list[str] = []

    async def hold(name: str, priority: Priority, until: asyncio.Event) -> None:
        async with api_slots.slot(priority):
            order.append(name)
            await until.wait()

    create = asyncio.create_task(hold("create", Priority.WRITE, create_may_end))
    await eventually_true(lambda: order == ["create"], what="the create holds the slot")
    recorder.record(lost())
    label = asyncio.create_task(hold("label", Priority.LABEL, label_may_end))
    await eventually_true(
        lambda: api_slots.waiting(Priority.EVENT) == 1 and api_slots.waiting(Priority.LABEL) == 1,
        what="the Event and the label patch wait",
    )
    create_may_end.set()  # the label patch goes next, although the Event came first
    await eventually_true(lambda: order == ["create", "label"], what="the label patch went")
    assert api_slots.waiting(Priority.EVENT) == 1
    assert await events_of(kube_api, namespace) == []
    label_may_end.set()
    await eventually_true(lambda: outcomes.written["create"] == 1, what="the Event written")
    (event,) = await events_of(kube_api, namespace)
    assert event.reason == "TaskManagerLost"
    await asyncio.gather(create, label)
