"""The reflector against the in-process fake API server: list → watch, stream ends, 410 in
the stream and as an answer, silent streams, dropped connections, bookmarks, failures in a
row and apart, RBAC refusals, resyncs. (tests/integration/test_kube_watch.py runs the same
loop against the real API server.)"""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio import client
from structlog.testing import capture_logs

from rmd.kube.listwatch import Json, ResourceQuery, list_converted, list_objects, whole_object
from rmd.kube.reflector import Reflector, ReflectorCallbacks, ReflectorTimings
from rmd.retry import Backoff, Pacing
from tests.support.fakeapiserver import FakeApiServer
from tests.support.waiting import eventually_true

NS = "ns1"
OURS = {"app": "c1", "component": "taskmanager"}
SELECTOR = "app=c1,component=taskmanager"
QUICK = ReflectorTimings(
    server_timeout=60,
    read_timeout=5.0,
    connect_timeout=2.0,
    list_timeout=5.0,
    resync_interval=None,
    backoff=Backoff(base=0.01, cap=0.05),
)
WAIT = 5.0
R = TypeVar("R", bound=Reflector[Any])  # a reflector of any record


class Recorder:
    """What the reflector reported, as (event type, pod name) and lists of names."""

    def __init__(self, *, fail_first_events: int = 0) -> None:
        self.events: list[tuple[str, str]] = []
        self.snapshots: list[list[str]] = []
        self.restarts: list[str] = []
        self.lists_started = 0
        self.requests: list[tuple[str, str, float]] = []
        self._fail_first_events = fail_first_events

    def callbacks(self) -> ReflectorCallbacks[Json]:
        return ReflectorCallbacks(
            convert=whole_object,
            on_snapshot=self._snapshot,
            on_event=self._event,
            on_restart=self.restarts.append,
            on_list_started=self._list_started,
            on_request=lambda verb, result, seconds: self.requests.append((verb, result, seconds)),
        )

    def _snapshot(self, items: list[Json]) -> None:
        self.snapshots.append(sorted(item["metadata"]["name"] for item in items))

    def _event(self, kind: str, item: Json) -> None:
        self.events.append((kind, item["metadata"]["name"]))
        if self._fail_first_events > 0:
            self._fail_first_events -= 1
            raise RuntimeError("consumer bug (on purpose)")

    def _list_started(self) -> None:
        self.lists_started += 1


@pytest.fixture
async def fake() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer() as server:
        yield server


@pytest.fixture
async def api(fake: FakeApiServer) -> AsyncIterator[client.ApiClient]:
    async with client.ApiClient(fake.configuration()) as api_client:
        yield api_client


@contextlib.asynccontextmanager
async def running(reflector: R) -> AsyncIterator[R]:
    task = asyncio.create_task(reflector.run())
    try:
        yield reflector
    finally:
        assert not task.done(), "Reflector.run() returned or raised instead of running on"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()


@contextlib.asynccontextmanager
async def watching(fake: FakeApiServer, reflector: R) -> AsyncIterator[R]:
    """:func:`running`, once the first LIST is delivered and the watch is open."""
    async with running(reflector):
        assert await reflector.wait_synced(WAIT)
        await until(lambda: fake.open_watches == 1, "an open watch")
        yield reflector


def make_reflector(
    api: client.ApiClient,
    recorder: Recorder,
    *,
    name: str = "watch",
    pacing: Pacing | None = None,
    **timings: Any,
) -> Reflector[Json]:
    chosen = ReflectorTimings(**{**_fields(QUICK), **timings})
    query = ResourceQuery(resource="pods", namespace=NS, label_selector=SELECTOR)
    return Reflector(
        api, query, callbacks=recorder.callbacks(), timings=chosen, pacing=pacing, name=name
    )


class RecordedSleeps:
    """A sleep that records what it was asked and only yields to the loop."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def _fields(timings: ReflectorTimings) -> dict[str, Any]:
    return {name: getattr(timings, name) for name in ReflectorTimings.__dataclass_fields__}


async def until(condition: Callable[[], bool], what: str) -> None:
    await eventually_true(condition, what=what, timeout=WAIT, interval=0.005)


async def test_snapshot_then_events_of_the_selected_pods(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    fake.put_pod(NS, "tm-1", labels=OURS)
    fake.put_pod(NS, "other", labels={"app": "c2"})
    fake.put_pod("ns2", "tm-elsewhere", labels=OURS)
    recorder = Recorder()
    async with running(make_reflector(api, recorder)) as reflector:
        assert await reflector.wait_synced(WAIT)
        assert recorder.snapshots == [["tm-1"]]
        listed_at = fake.resource_version
        await until(lambda: fake.open_watches == 1, "an open watch")
        fake.put_pod(NS, "tm-2", labels=OURS)
        fake.put_pod(NS, "tm-1", labels=OURS)
        fake.put_pod(NS, "not-ours", labels={"app": "c2"})
        fake.delete_pod(NS, "tm-2")
        await until(lambda: len(recorder.events) == 3, "three events")
        assert reflector.resource_version == fake.resource_version  # the DELETE's version
    assert recorder.events == [("ADDED", "tm-2"), ("MODIFIED", "tm-1"), ("DELETED", "tm-2")]
    (watch,) = fake.watch_requests()
    assert watch.query["resourceVersion"] == listed_at
    assert watch.query["allowWatchBookmarks"] == "true"
    assert watch.query["labelSelector"] == SELECTOR
    assert watch.query["timeoutSeconds"] == "60"
    assert recorder.restarts == []


async def test_a_stream_that_ends_is_resumed_from_the_last_version_without_a_list(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    recorder = Recorder()
    async with watching(fake, make_reflector(api, recorder, min_healthy_stream=0.0)):
        fake.put_pod(NS, "tm-1", labels=OURS)
        await until(lambda: recorder.events == [("ADDED", "tm-1")], "the first event")
        seen = fake.resource_version
        assert fake.end_watches() == 1
        await until(lambda: len(fake.watch_requests()) == 2, "a renewed watch")
        fake.put_pod(NS, "tm-2", labels=OURS)
        await until(lambda: ("ADDED", "tm-2") in recorder.events, "an event after the renewal")
    assert fake.watch_requests()[1].query["resourceVersion"] == seen
    assert len(fake.list_requests()) == 1
    assert recorder.restarts == []


async def test_a_stream_that_ends_at_once_backs_off_and_finally_relists(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    # A proxy that closes every watch at once must not turn the loop into a busy loop.
    sleeps = RecordedSleeps()
    recorder = Recorder()
    reflector = make_reflector(api, recorder, pacing=Pacing(sleep=sleeps, uniform=lambda: 1.0))
    async with running(reflector):
        assert await reflector.wait_synced(WAIT)
        for _ in range(3):
            await until(lambda: fake.open_watches == 1, "an open watch")
            fake.end_watches()
        await until(lambda: len(recorder.snapshots) == 2, "a relist after three early ends")
    assert recorder.restarts[:3] == ["ended-early"] * 3
    assert sleeps.delays[:3] == [0.01, 0.02, 0.04]


async def test_an_in_stream_410_relists_and_carries_on(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    fake.put_pod(NS, "tm-1", labels=OURS)
    recorder = Recorder()
    async with watching(fake, make_reflector(api, recorder)) as reflector:
        # While no watch is open, a pod comes and the history it was in is compacted away:
        # the watch from the old version meets an ERROR event with a 410 Status.
        fake.drop_watches()
        fake.put_pod(NS, "tm-2", labels=OURS)
        fake.compact()
        fake.put_pod(NS, "other", labels={"app": "c2"})
        await until(lambda: len(recorder.snapshots) == 2, "a second LIST")
        assert recorder.snapshots[-1] == ["tm-1", "tm-2"]
        await until(lambda: fake.open_watches == 1, "a watch after the relist")
        fake.put_pod(NS, "tm-3", labels=OURS)
        await until(lambda: ("ADDED", "tm-3") in recorder.events, "events after the relist")
        assert reflector.synced
    assert recorder.restarts == ["disconnected", "gone"]


async def test_an_http_410_on_the_watch_relists(fake: FakeApiServer, api: client.ApiClient) -> None:
    fake.fail(410, watch=True, message="too old resource version: 5 (9)")
    recorder = Recorder()
    async with running(make_reflector(api, recorder)):
        await until(lambda: len(recorder.snapshots) == 2, "a second LIST")
        await until(lambda: fake.open_watches == 1, "a watch after the relist")
        fake.put_pod(NS, "tm-1", labels=OURS)
        await until(lambda: ("ADDED", "tm-1") in recorder.events, "events after the relist")
    assert recorder.restarts == ["gone"]


async def test_every_list_request_is_reported_with_its_result_and_duration(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    fake.fail(503, watch=False)
    fake.fail(403, watch=False)
    recorder = Recorder()
    async with running(make_reflector(api, recorder)) as reflector:
        assert await reflector.wait_synced(WAIT)
    assert [(verb, result) for verb, result, _ in recorder.requests] == [
        ("list", "server-error"),
        ("list", "client-error"),
        ("list", "success"),
    ]
    assert all(0 <= seconds < WAIT for _, _, seconds in recorder.requests)


async def test_a_silent_watch_is_renewed_at_once_without_a_list(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    # kube-apiserver 1.20 sends no periodic bookmarks: a quiet watch reads nothing, and the
    # read timeout fires before the server's timeout.
    recorder = Recorder()
    slow_backoff = Backoff(base=5.0, cap=5.0)  # a backoff would make this test time out
    reflector = make_reflector(api, recorder, read_timeout=0.1, backoff=slow_backoff)
    async with running(reflector):
        assert await reflector.wait_synced(WAIT)
        await until(lambda: recorder.restarts.count("idle") >= 3, "three idle renewals")
        assert reflector.synced
        await until(lambda: fake.open_watches == 1, "an open watch")
        fake.put_pod(NS, "tm-1", labels=OURS)
        await until(lambda: ("ADDED", "tm-1") in recorder.events, "events after renewals")
    assert set(recorder.restarts) == {"idle"}
    assert recorder.snapshots == [[]]


async def test_routine_renewals_do_not_add_up_with_failures_far_apart(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    # Issue #12: the failure count never went back to 0 on a quiet watch, so two short
    # incidents (a drop, one failed reconnect) minutes apart marked the watch unsynced (and
    # answered /readyz and /v1 with 503) although each was over at once.
    recorder = Recorder()
    reflector = make_reflector(api, recorder, read_timeout=0.1)
    with capture_logs() as logs:
        async with running(reflector):
            assert await reflector.wait_synced(WAIT)
            for incident in (1, 2, 3):
                fake.fail(503, watch=True)
                fake.drop_watches()
                await until(
                    lambda: recorder.restarts.count("server-error") == incident,  # noqa: B023
                    "a failed reconnect",
                )
                await until(
                    lambda: recorder.restarts.count("idle") >= 2 * incident,  # noqa: B023
                    "quiet watches renewed after the incident",
                )
                assert reflector.synced
    assert recorder.snapshots == [[]]
    assert not [entry for entry in logs if entry["event"] == "watch_unsynced"]


async def test_a_dropped_watch_reconnects_from_its_version_without_losing_events(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    fake.put_pod(NS, "tm-1", labels=OURS)
    recorder = Recorder()
    async with watching(fake, make_reflector(api, recorder)) as reflector:
        fake.fail(503, watch=True)
        assert fake.drop_watches() == 1
        fake.put_pod(NS, "tm-2", labels=OURS)
        fake.delete_pod(NS, "tm-1")
        await until(lambda: ("DELETED", "tm-1") in recorder.events, "changes made meanwhile")
        assert reflector.synced
    assert recorder.events == [("ADDED", "tm-2"), ("DELETED", "tm-1")]
    assert recorder.restarts == ["disconnected", "server-error"]
    assert recorder.snapshots == [["tm-1"]]
    assert [r.status for r in fake.watch_requests()] == [200, 503, 200]


async def test_bookmarks_move_the_version_a_reconnect_resumes_from(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    recorder = Recorder()
    async with watching(fake, make_reflector(api, recorder)) as reflector:
        fake.put_pod(NS, "not-ours", labels={"app": "c2"})  # moves the version, no event
        fake.bookmark()
        await until(
            lambda: reflector.resource_version == fake.resource_version, "the bookmark's version"
        )
        fake.drop_watches()
        await until(lambda: len(fake.watch_requests()) == 2, "a reconnect")
    assert fake.watch_requests()[1].query["resourceVersion"] == fake.resource_version
    assert recorder.events == []
    assert recorder.snapshots == [[]]


async def test_failures_in_a_row_unsync_and_only_a_list_syncs_again(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    recorder = Recorder()
    async with watching(fake, make_reflector(api, recorder)) as reflector:
        outage = fake.fail(503, times=None)
        fake.drop_watches()
        await until(lambda: recorder.restarts.count("server-error") >= 4, "failures in a row")
        assert not reflector.synced
        outage.times = outage.hits  # the API server is back
        assert await reflector.wait_synced(WAIT)
    assert recorder.snapshots == [[], []]
    assert [r.status for r in fake.list_requests()][-1] == 200


async def test_retry_after_of_a_throttled_watch_is_honoured(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    sleeps = RecordedSleeps()
    fake.fail(429, watch=True, retry_after=7)
    recorder = Recorder()
    async with running(make_reflector(api, recorder, pacing=Pacing(sleep=sleeps))):
        await until(lambda: len(fake.watch_requests()) == 2, "a second watch")
    assert sleeps.delays == [7.0]
    assert recorder.restarts == ["throttled"]


async def test_forbidden_says_which_permission_and_recovers_when_granted(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    refusal = fake.fail(
        403,
        times=None,
        message=f'pods is forbidden: cannot list resource "pods" in the namespace "{NS}"',
    )
    recorder = Recorder()
    with capture_logs() as logs:
        async with running(make_reflector(api, recorder, name="pod_watch")) as reflector:
            await until(lambda: recorder.restarts.count("forbidden") >= 2, "two refusals")
            assert not reflector.synced
            refusal.times = refusal.hits  # permission granted
            assert await reflector.wait_synced(WAIT)
    forbidden = [entry for entry in logs if entry["event"] == "pod_watch_forbidden"]
    assert forbidden[0]["problem"] == (
        f"cannot list pods in namespace {NS}: grant get/list/watch on pods to the service account"
    )
    assert 'cannot list resource "pods"' in forbidden[0]["message"]
    assert forbidden[0]["log_level"] == "error"


async def test_resync_now_interrupts_the_watch_and_returns_after_a_new_snapshot(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    recorder = Recorder()
    async with watching(fake, make_reflector(api, recorder)) as reflector:
        fake.put_pod(NS, "tm-1", labels=OURS)
        async with asyncio.timeout(WAIT):
            await reflector.resync_now()
        assert recorder.snapshots == [[], ["tm-1"]]
        assert recorder.lists_started == 2
    assert recorder.restarts == []


async def test_a_periodic_resync_lists_again_and_bounds_the_watch(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    recorder = Recorder()
    async with running(make_reflector(api, recorder, resync_interval=1.0)):
        fake.put_pod(NS, "tm-1", labels=OURS)
        await until(lambda: len(recorder.snapshots) >= 2, "a second snapshot")
    assert recorder.snapshots[1] == ["tm-1"]
    assert all(r.query["timeoutSeconds"] == "1" for r in fake.watch_requests())


async def test_a_failing_consumer_gets_a_fresh_snapshot(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    recorder = Recorder(fail_first_events=1)
    with capture_logs() as logs:
        async with running(make_reflector(api, recorder)) as reflector:
            assert await reflector.wait_synced(WAIT)
            await until(lambda: fake.open_watches == 1, "an open watch")
            fake.put_pod(NS, "tm-1", labels=OURS)
            await until(lambda: recorder.snapshots == [[], ["tm-1"]], "a catching-up snapshot")
    assert any(entry["event"] == "watch_consumer_failed" for entry in logs)


async def test_a_paged_list_starts_over_when_its_continue_token_expires(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    for index in range(1, 4):
        fake.put_pod(NS, f"tm-{index}", labels=OURS)
    compactions: list[str] = []

    def compact_once() -> None:
        if not compactions:
            fake.put_pod(NS, "tm-4", labels=OURS)
            fake.compact()
            compactions.append(fake.resource_version)

    fake.before_next_page = compact_once
    query = ResourceQuery(namespace=NS, label_selector=SELECTOR)
    items, version = await list_objects(api, query, timeout=(2, 5), page_size=2)
    assert sorted(item["metadata"]["name"] for item in items) == ["tm-1", "tm-2", "tm-3", "tm-4"]
    assert version == compactions[0]
    statuses = [(r.status, "continue" in r.query) for r in fake.list_requests()]
    assert statuses == [(200, False), (410, True), (200, False), (200, True)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("server_timeout", 0.5),
        ("read_timeout", 0.0),
        ("list_timeout", -1.0),
        ("resync_interval", 0.0),
        ("unsynced_after_failures", 0),
    ],
)
def test_nonsense_timings_are_refused_naming_the_field(field: str, value: float) -> None:
    settings: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=f"ReflectorTimings.{field} must be"):
        ReflectorTimings(**settings)


async def test_each_list_page_is_converted_before_the_next_page_is_asked_for(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    for index in range(1, 6):
        fake.put_pod(NS, f"tm-{index}", labels=OURS)
    converted_after: list[tuple[str, int]] = []  # (pod, LIST requests answered by then)

    def convert(pod: Json) -> str:
        converted_after.append((pod["metadata"]["name"], len(fake.list_requests())))
        return str(pod["metadata"]["name"])

    query = ResourceQuery(namespace=NS, label_selector=SELECTOR)
    names, _ = await list_converted(api, query, convert=convert, timeout=(2, 5), page_size=2)
    assert names == ["tm-1", "tm-2", "tm-3", "tm-4", "tm-5"]
    assert converted_after == [("tm-1", 1), ("tm-2", 1), ("tm-3", 2), ("tm-4", 2), ("tm-5", 3)]


async def test_a_converted_list_holds_one_page_of_raw_objects_not_all_of_them(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    """While the last page of a resync is asked for, what the lister holds has grown by the
    small records of the pages before it, not by their raw objects."""
    for index in range(1000):
        fake.put_pod(NS, f"tm-{index}", labels=OURS)
    query = ResourceQuery(namespace=NS, label_selector=SELECTOR)
    held: list[int] = []  # traced memory each time the next page is asked for
    fake.before_next_page = lambda: held.append(tracemalloc.get_traced_memory()[0])

    async def growth_of(list_call: Callable[[], Awaitable[object]]) -> int:
        held.clear()
        tracemalloc.start()
        try:
            await list_call()
        finally:
            tracemalloc.stop()
        assert len(held) == 19  # 20 pages of 50
        return held[-1] - held[0]

    def uid(pod: Json) -> str:
        return str(pod["metadata"]["uid"])

    whole = await growth_of(lambda: list_objects(api, query, timeout=(2, 5), page_size=50))
    converted = await growth_of(
        lambda: list_converted(api, query, convert=uid, timeout=(2, 5), page_size=50)
    )
    assert converted < whole / 4, (converted, whole)


async def test_the_consumer_gets_its_own_records_from_the_list_and_from_events(
    fake: FakeApiServer, api: client.ApiClient
) -> None:
    fake.put_pod(NS, "tm-1", labels=OURS)
    snapshots: list[list[tuple[str, str]]] = []
    events: list[tuple[str, tuple[str, str]]] = []

    def record(pod: Json) -> tuple[str, str]:  # what a consumer keeps: a few fields
        return pod["metadata"]["name"], pod["status"]["phase"]

    query = ResourceQuery(namespace=NS, label_selector=SELECTOR)
    reflector = Reflector(
        api,
        query,
        callbacks=ReflectorCallbacks(
            convert=record,
            on_snapshot=snapshots.append,
            on_event=lambda kind, pod: events.append((kind, pod)),
        ),
        timings=QUICK,
    )
    async with watching(fake, reflector):
        fake.put_pod(NS, "tm-2", labels=OURS)
        fake.delete_pod(NS, "tm-1")
        await until(lambda: len(events) == 2, "two events")
    assert snapshots == [[("tm-1", "Pending")]]
    assert events == [("ADDED", ("tm-2", "Pending")), ("DELETED", ("tm-1", "Pending"))]
