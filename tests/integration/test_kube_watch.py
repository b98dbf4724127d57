"""PodWatcher against the real control plane, directly and through the fault proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import pytest
from kubernetes_asyncio import client
from structlog.testing import capture_logs

from rmd.core.model import PodObservation
from rmd.kube.pods import PodGateway
from rmd.kube.reflector import ReflectorTimings
from rmd.kube.watch import PodWatcher
from rmd.retry import Backoff
from tests.conftest import REQUEST_TIMEOUT, LimitedApiFactory
from tests.integration.test_kube_pods import SELECTOR, pod_body
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually_true, within
from tests.unit.test_reflector import running

pytestmark = pytest.mark.integration

WAIT = 30.0


class Recorder:
    """Collects what the watcher reports; tests wait on it with a deadline."""

    def __init__(self, *, fail_first_events: int = 0) -> None:
        self.events: list[tuple[str, PodObservation]] = []
        self.snapshots: list[list[PodObservation]] = []
        self.restarts: list[str] = []
        self._fail_first_events = fail_first_events

    def on_event(self, kind: str, observation: PodObservation) -> None:
        self.events.append((kind, observation))
        if self._fail_first_events > 0:
            self._fail_first_events -= 1
            raise RuntimeError("consumer bug (on purpose)")

    def on_snapshot(self, observations: list[PodObservation]) -> None:
        self.snapshots.append(observations)

    def on_restart(self, reason: str) -> None:
        self.restarts.append(reason)

    def saw(
        self,
        kind: str,
        name: str,
        predicate: Callable[[PodObservation], bool] = bool,
    ) -> bool:
        return any(k == kind and o.name == name and predicate(o) for k, o in self.events)

    async def wait_for(
        self, condition: Callable[[], bool], *, what: str, timeout: float = WAIT
    ) -> None:
        try:
            await eventually_true(condition, what=what, timeout=timeout)
        except AssertionError as failure:
            raise AssertionError(
                f"{failure}; events={[(k, o.name) for k, o in self.events]} "
                f"snapshots={len(self.snapshots)} restarts={self.restarts}"
            ) from None


def make_watcher(
    api: client.ApiClient, namespace: str, recorder: Recorder, **timings: Any
) -> PodWatcher:
    timings.setdefault("backoff", Backoff(base=0.1, cap=0.5))
    return PodWatcher(
        api,
        namespace=namespace,
        label_selector=SELECTOR,
        on_event=recorder.on_event,
        on_snapshot=recorder.on_snapshot,
        on_restart=recorder.on_restart,
        timings=ReflectorTimings(**timings),
    )


def watch_requests(proxy: FaultProxy, namespace: str) -> list[dict[str, list[str]]]:
    return [
        parse_qs(r.query)
        for r in proxy.requests
        if r.is_watch and r.path == f"/api/v1/namespaces/{namespace}/pods"
    ]


def list_requests(proxy: FaultProxy, namespace: str) -> list[Any]:
    return [
        r
        for r in proxy.requests
        if not r.is_watch and r.method == "GET" and r.path == f"/api/v1/namespaces/{namespace}/pods"
    ]


async def test_snapshot_then_added_modified_deleted(
    kube_api: client.ApiClient, namespace: str
) -> None:
    recorder = Recorder()
    pods = PodGateway(kube_api, namespace=namespace)
    async with running(make_watcher(kube_api, namespace, recorder)) as watcher:
        assert await watcher.wait_synced(WAIT)
        assert watcher.synced
        assert recorder.snapshots == [[]]
        await pods.create(pod_body("c1-taskmanager-1-1"))
        await pods.create(pod_body("c2-taskmanager-1-1", cluster="c2"))  # not selected
        await recorder.wait_for(lambda: recorder.saw("ADDED", "c1-taskmanager-1-1"), what="ADDED")
        await recorder.wait_for(
            lambda: recorder.saw("MODIFIED", "c1-taskmanager-1-1", lambda o: o.scheduled),
            what="MODIFIED with a node",
        )
        await pods.delete("c1-taskmanager-1-1", grace_period_seconds=0)
        await recorder.wait_for(
            lambda: recorder.saw("DELETED", "c1-taskmanager-1-1"), what="DELETED"
        )
        assert all(o.name == "c1-taskmanager-1-1" for _, o in recorder.events)
        assert len(recorder.snapshots) == 1
        assert recorder.restarts == []


async def test_initial_snapshot_holds_the_existing_pods(
    kube_api: client.ApiClient, namespace: str
) -> None:
    pods = PodGateway(kube_api, namespace=namespace)
    await pods.create(pod_body("c1-taskmanager-1-1"))
    await pods.create(pod_body("c1-taskmanager-1-2"))
    await pods.create(pod_body("c2-taskmanager-1-1", cluster="c2"))
    recorder = Recorder()
    async with running(make_watcher(kube_api, namespace, recorder)) as watcher:
        assert await watcher.wait_synced(WAIT)
        assert sorted(o.name for o in recorder.snapshots[0]) == [
            "c1-taskmanager-1-1",
            "c1-taskmanager-1-2",
        ]


async def test_stream_end_resumes_from_the_last_version_without_relisting(
    proxy: FaultProxy, proxied_api: client.ApiClient, kube_api: client.ApiClient, namespace: str
) -> None:
    recorder = Recorder()
    pods = PodGateway(kube_api, namespace=namespace)
    watcher = make_watcher(proxied_api, namespace, recorder, server_timeout=1)
    async with running(watcher):
        assert await watcher.wait_synced(WAIT)
        await pods.create(pod_body("c1-taskmanager-1-1"))
        await recorder.wait_for(
            lambda: recorder.saw("ADDED", "c1-taskmanager-1-1"), what="ADDED before the stream ends"
        )
        first_version = watcher.resource_version
        await eventually_true(
            lambda: len(watch_requests(proxy, namespace)) >= 3, what="the watch to be renewed twice"
        )
        await pods.create(pod_body("c1-taskmanager-1-2"))
        await recorder.wait_for(
            lambda: recorder.saw("ADDED", "c1-taskmanager-1-2"), what="ADDED after renewals"
        )
    assert len(recorder.snapshots) == 1
    assert len(list_requests(proxy, namespace)) == 1
    queries = watch_requests(proxy, namespace)
    assert all(q["allowWatchBookmarks"][0].lower() == "true" for q in queries)
    assert all(q["timeoutSeconds"] == ["1"] for q in queries)
    assert all(q["labelSelector"] == [SELECTOR] for q in queries)
    assert int(queries[-1]["resourceVersion"][0]) >= int(first_version or 0)
    assert recorder.restarts == []


async def test_a_silent_watch_is_renewed_at_once_without_relisting(
    kube_api: client.ApiClient, namespace: str
) -> None:
    # API servers before 1.27 (this one is 1.20) send no periodic bookmarks: a quiet watch
    # reads nothing until its server-side timeout, and the read timeout fires first.
    recorder = Recorder()
    watcher = make_watcher(
        kube_api, namespace, recorder, read_timeout=0.5, backoff=Backoff(base=5.0, cap=5.0)
    )
    async with running(watcher):
        assert await watcher.wait_synced(WAIT)
        await recorder.wait_for(
            lambda: recorder.restarts.count("idle") >= 3, what="three idle renewals", timeout=10
        )
        assert watcher.synced
        await PodGateway(kube_api, namespace=namespace).create(pod_body("c1-taskmanager-1-1"))
        await recorder.wait_for(
            lambda: recorder.saw("ADDED", "c1-taskmanager-1-1"),
            what="ADDED after idle renewals",
            timeout=10,
        )
    assert set(recorder.restarts) == {"idle"}
    assert len(recorder.snapshots) == 1


async def test_dropped_watch_reconnects_without_losing_events(
    proxy: FaultProxy, proxied_api: client.ApiClient, kube_api: client.ApiClient, namespace: str
) -> None:
    recorder = Recorder()
    pods = PodGateway(kube_api, namespace=namespace)
    watcher = make_watcher(proxied_api, namespace, recorder)
    async with running(watcher):
        assert await watcher.wait_synced(WAIT)
        await pods.create(pod_body("c1-taskmanager-1-1"))
        await recorder.wait_for(
            lambda: recorder.saw("ADDED", "c1-taskmanager-1-1"), what="ADDED of the first pod"
        )
        await eventually_true(lambda: proxy.open_watches == 1, what="an open watch")
        # The reconnect hangs for 1 s, then fails: the changes below happen while no watch
        # is open, and must still arrive.
        proxy.inject(path_regex=r"/pods$", status=503, watch_only=True, times=1, delay=1.0)
        assert proxy.drop_watches() == 1
        await pods.create(pod_body("c1-taskmanager-1-2"))
        await pods.delete("c1-taskmanager-1-1", grace_period_seconds=0)
        await recorder.wait_for(
            lambda: recorder.saw("ADDED", "c1-taskmanager-1-2"),
            what="ADDED made while disconnected",
        )
        await recorder.wait_for(
            lambda: recorder.saw("DELETED", "c1-taskmanager-1-1"),
            what="DELETED made while disconnected",
        )
        assert watcher.synced
    assert len(recorder.snapshots) == 1  # resumed from the resourceVersion, no relist
    assert "server-error" in recorder.restarts
    statuses = [r.status for r in proxy.requests if r.is_watch]
    assert statuses.count(503) == 1
    assert len(statuses) >= 3


async def test_in_stream_410_relists_and_continues(
    proxy: FaultProxy, proxied_api: client.ApiClient, kube_api: client.ApiClient, namespace: str
) -> None:
    # What an API server sends when the watch's resourceVersion fell out of its watch
    # cache: HTTP 200, then one ERROR event carrying a 410 Status. Changes made meanwhile
    # must arrive with the new snapshot.
    pods = PodGateway(kube_api, namespace=namespace)
    await pods.create(pod_body("c1-taskmanager-1-1"))
    recorder = Recorder()
    watcher = make_watcher(proxied_api, namespace, recorder)
    async with running(watcher):
        assert await watcher.wait_synced(WAIT)
        await eventually_true(lambda: proxy.open_watches == 1, what="an open watch")
        outage = asyncio.Event()
        proxy.inject(
            path_regex=r"/pods$",
            status=410,
            watch_only=True,
            in_stream=True,
            times=1,
            gate=outage,
            message="too old resource version: 1 (2)",
        )
        proxy.drop_watches()
        await pods.create(pod_body("c1-taskmanager-1-2"))  # while no watch is open
        outage.set()
        await recorder.wait_for(lambda: len(recorder.snapshots) >= 2, what="a second LIST")
        assert sorted(o.name for o in recorder.snapshots[-1]) == [
            "c1-taskmanager-1-1",
            "c1-taskmanager-1-2",
        ]
        assert await watcher.wait_synced(WAIT)
        await pods.create(pod_body("c1-taskmanager-1-3"))
        await recorder.wait_for(
            lambda: recorder.saw("ADDED", "c1-taskmanager-1-3"), what="events after the relist"
        )
    assert recorder.restarts.count("gone") == 1
    assert len(list_requests(proxy, namespace)) == 2


async def test_http_410_on_the_watch_relists(
    proxy: FaultProxy, proxied_api: client.ApiClient, kube_api: client.ApiClient, namespace: str
) -> None:
    proxy.inject(
        path_regex=r"/pods$",
        status=410,
        watch_only=True,
        times=1,
        message="too old resource version: 5 (9)",
    )
    recorder = Recorder()
    watcher = make_watcher(proxied_api, namespace, recorder)
    async with running(watcher):
        await recorder.wait_for(lambda: len(recorder.snapshots) >= 2, what="a second LIST")
        await PodGateway(kube_api, namespace=namespace).create(pod_body("c1-taskmanager-1-1"))
        await recorder.wait_for(
            lambda: recorder.saw("ADDED", "c1-taskmanager-1-1"), what="events after the relist"
        )
    assert recorder.restarts == ["gone"]


async def test_forbidden_watch_says_which_permission_and_recovers_when_granted(
    kube_api: client.ApiClient, namespace: str, limited_api_factory: LimitedApiFactory
) -> None:
    limited = await limited_api_factory(
        namespace, [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    )
    rbac = client.RbacAuthorizationV1Api(kube_api)
    roles = await rbac.list_namespaced_role(namespace, _request_timeout=REQUEST_TIMEOUT)
    (role,) = [r for r in roles.items if r.metadata.name.startswith("limited-")]
    recorder = Recorder()
    watcher = make_watcher(limited, namespace, recorder)
    with capture_logs() as logs:
        async with running(watcher):
            await recorder.wait_for(
                lambda: recorder.restarts.count("forbidden") >= 2, what="two forbidden attempts"
            )
            assert not watcher.synced
            assert not await watcher.wait_synced(0.2)
            await rbac.patch_namespaced_role(
                role.metadata.name,
                namespace,
                {
                    "rules": [
                        {
                            "apiGroups": [""],
                            "resources": ["pods"],
                            "verbs": ["get", "list", "watch"],
                        }
                    ]
                },
                _request_timeout=REQUEST_TIMEOUT,
            )
            assert await watcher.wait_synced(WAIT)
            await PodGateway(kube_api, namespace=namespace).create(pod_body("c1-taskmanager-1-1"))
            await recorder.wait_for(
                lambda: recorder.saw("ADDED", "c1-taskmanager-1-1"), what="events once permitted"
            )
    forbidden = [e for e in logs if e["event"] == "pod_watch_forbidden"]
    assert forbidden
    assert forbidden[0]["problem"] == (
        f"cannot list pods in namespace {namespace}: grant get/list/watch on pods to the "
        "service account"
    )
    assert 'cannot list resource "pods"' in forbidden[0]["message"]
    assert forbidden[0]["log_level"] == "error"


async def test_persistent_failures_unsync_and_a_list_resyncs(
    proxy: FaultProxy, proxied_api: client.ApiClient, namespace: str
) -> None:
    recorder = Recorder()
    watcher = make_watcher(proxied_api, namespace, recorder)
    async with running(watcher):
        assert await watcher.wait_synced(WAIT)
        await eventually_true(lambda: proxy.open_watches == 1, what="an open watch")
        outage = proxy.inject(path_regex=r"/pods$", status=503, times=None)
        proxy.drop_watches()
        await recorder.wait_for(
            lambda: recorder.restarts.count("server-error") >= 4, what="repeated failures"
        )
        assert not watcher.synced
        proxy.clear_faults()
        assert outage.hits >= 4
        assert await watcher.wait_synced(WAIT)
    assert len(recorder.snapshots) == 2  # synced again only through a fresh LIST


async def test_periodic_resync_delivers_fresh_snapshots(
    proxy: FaultProxy, proxied_api: client.ApiClient, kube_api: client.ApiClient, namespace: str
) -> None:
    recorder = Recorder()
    watcher = make_watcher(proxied_api, namespace, recorder, resync_interval=1.0)
    pods = PodGateway(kube_api, namespace=namespace)
    async with running(watcher):
        await pods.create(pod_body("c1-taskmanager-1-1"))
        await recorder.wait_for(lambda: len(recorder.snapshots) >= 3, what="three snapshots")
        await recorder.wait_for(
            lambda: any(o.name == "c1-taskmanager-1-1" for o in recorder.snapshots[-1]),
            what="the pod in a later snapshot",
        )
        await pods.create(pod_body("c1-taskmanager-1-2"))
        await recorder.wait_for(
            lambda: (
                recorder.saw("ADDED", "c1-taskmanager-1-2")
                or any(o.name == "c1-taskmanager-1-2" for o in recorder.snapshots[-1])
            ),
            what="the second pod",
        )
    assert len(list_requests(proxy, namespace)) >= 3
    assert all(q["timeoutSeconds"][0] in ("1",) for q in watch_requests(proxy, namespace))


async def test_resync_now_returns_after_a_new_snapshot(
    kube_api: client.ApiClient, namespace: str
) -> None:
    recorder = Recorder()
    pods = PodGateway(kube_api, namespace=namespace)
    async with running(make_watcher(kube_api, namespace, recorder)) as watcher:
        assert await watcher.wait_synced(WAIT)
        await pods.create(pod_body("c1-taskmanager-1-1"))
        await within(watcher.resync_now(), seconds=WAIT, what="the resync")
        assert len(recorder.snapshots) == 2
        assert [o.name for o in recorder.snapshots[1]] == ["c1-taskmanager-1-1"]


async def test_a_failing_consumer_gets_a_fresh_snapshot(
    kube_api: client.ApiClient, namespace: str
) -> None:
    recorder = Recorder(fail_first_events=1)
    pods = PodGateway(kube_api, namespace=namespace)
    with capture_logs() as logs:
        async with running(make_watcher(kube_api, namespace, recorder)) as watcher:
            assert await watcher.wait_synced(WAIT)
            await pods.create(pod_body("c1-taskmanager-1-1"))
            await recorder.wait_for(
                lambda: (
                    len(recorder.snapshots) >= 2
                    and [o.name for o in recorder.snapshots[-1]] == ["c1-taskmanager-1-1"]
                ),
                what="a snapshot that makes up for the lost event",
            )
    assert any(e["event"] == "pod_watch_consumer_failed" for e in logs)
