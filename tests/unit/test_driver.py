"""The daemon's engine: the real allocator and real metrics, with a fake of the pod gateway
(the one part that needs an API server) that behaves like the real one: creates and
deletes are awaited, can fail with the gateway's own error types, and are recorded."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import fields
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import Clock, ManualClock, SystemClock
from rmd.core.model import PodObservation, RecoveryFigures, TaskManagerState
from rmd.core.recovery import StateSnapshot, job_state
from rmd.driver import DaemonEngine
from rmd.kube.pods import PodCreateError, PodDeleteError
from rmd.metrics import RmdMetrics
from rmd.retry import Backoff, Pacing
from tests.support.background import Background
from tests.support.waiting import eventually_true, within


class FakePodGateway:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.create_errors: list[PodCreateError] = []
        self.delete_errors: list[PodDeleteError] = []
        self.hold_creates = asyncio.Event()
        self.hold_creates.set()

    async def create(self, body: dict[str, Any]) -> None:
        await self.hold_creates.wait()
        if self.create_errors:
            raise self.create_errors.pop(0)
        self.created.append(body["metadata"]["name"])

    async def delete(self, name: str, *, grace_period_seconds: int | None = None) -> None:
        if self.delete_errors:
            raise self.delete_errors.pop(0)
        self.deleted.append(name)


def build_engine(
    *,
    owner_exists: Callable[[], Awaitable[bool]] | None = None,
    owner_name: str | None = None,
    clock: Clock | None = None,
    standby: bool = False,
    **settings: Any,
) -> tuple[DaemonEngine, FakePodGateway, RmdMetrics]:
    settings.setdefault("slots_per_taskmanager", 2)
    clock = clock if clock is not None else SystemClock()
    allocator = Allocator(AllocatorSettings(cluster_id="c", **settings), clock=clock)
    metrics = RmdMetrics(registry=CollectorRegistry(), status=allocator.status)
    gateway = FakePodGateway()

    def build_pod(*, pod_name: str) -> dict[str, Any]:
        return {"metadata": {"name": pod_name}}

    engine = DaemonEngine(
        allocator=allocator,
        pods=gateway,
        build_pod=build_pod,
        metrics=metrics,
        clock=clock,
        delete_backoff=Backoff(base=0.01, cap=0.02),
        pacing=Pacing(uniform=random.Random(7).random),
        owner_exists=owner_exists,
        owner_name=owner_name,
        standby=standby,
    )
    return engine, gateway, metrics


EngineFactory = Callable[..., tuple[DaemonEngine, FakePodGateway, RmdMetrics]]


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineFactory]:
    """Builds engines (see build_engine) and closes each when the test ends, passed or not."""
    engines: list[DaemonEngine] = []

    def make(**options: Any) -> tuple[DaemonEngine, FakePodGateway, RmdMetrics]:
        built = build_engine(**options)
        engines.append(built[0])
        return built

    try:
        yield make
    finally:
        for engine in engines:
            await engine.close()


def sample(metrics: RmdMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until(check: Callable[[], bool], *, what: str, timeout: float = 5.0) -> None:
    """Wait for a condition with a deadline (the gateway's effects run as tasks)."""
    await eventually_true(check, what=what, timeout=timeout, interval=0.005)


def states(engine: DaemonEngine) -> dict[str, TaskManagerState]:
    return {v.taskmanager_id: v.state for v in engine.allocator.taskmanager_views()}


async def test_creates_are_carried_out_and_reported_back(make_engine: EngineFactory) -> None:
    engine, gateway, metrics = make_engine()
    engine.apply(engine.allocator.declare("j", 4))
    await until(lambda: len(gateway.created) == 2, what="two pods created")
    await until(lambda: set(states(engine).values()) == {TaskManagerState.PENDING}, what="pending")
    assert sample(metrics, "rmd_pods_created_total") == 2
    await engine.close()


async def test_a_failed_create_is_a_start_failure_and_is_replaced(
    make_engine: EngineFactory,
) -> None:
    engine, gateway, metrics = make_engine()
    gateway.create_errors.append(
        PodCreateError("Invalid", 'Pod "x" is invalid: spec', retriable=False, status=422)
    )
    engine.apply(engine.allocator.declare("j", 2))
    await until(lambda: len(gateway.created) == 1, what="the replacement created")
    assert sample(metrics, "rmd_start_failures_total") == 1
    assert gateway.created == ["c-taskmanager-1-2"]
    await engine.close()


async def test_a_create_refused_by_the_quota_is_sent_again_not_counted(
    make_engine: EngineFactory, background: Background
) -> None:
    engine, gateway, metrics = make_engine(create_retry_base=0.01, create_retry_max=0.02)
    gateway.create_errors.append(
        PodCreateError(
            "QuotaExceeded",
            'pods "c-taskmanager-1-1" is forbidden: exceeded quota: q',
            retriable=False,
            status=403,
        )
    )
    background.start(engine.run_timers())
    engine.apply(engine.allocator.declare("j", 2))
    await until(lambda: len(gateway.created) == 1, what="the same create sent again")
    assert gateway.created == ["c-taskmanager-1-1"]  # the same name: no second pod
    assert sample(metrics, "rmd_start_failures_total") == 0
    await engine.close()


async def test_a_create_an_admission_plugin_denies_is_a_paced_start_failure(
    make_engine: EngineFactory, background: Background
) -> None:
    # LimitRanger's real 403 (a Status with reason Forbidden), as the gateway classifies it
    denial = ApiException(status=403, reason="Forbidden")
    denial.body = json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "reason": "Forbidden",
            "code": 403,
            "message": 'pods "c-taskmanager-1-1" is forbidden: maximum cpu usage per '
            "Container is 100m, but limit is 1",
        }
    ).encode()
    engine, gateway, metrics = make_engine(
        max_start_failures_per_minute=2, start_retry_interval=60.0
    )
    gateway.create_errors += [PodCreateError.from_exception(denial)] * 10
    timers = background.start(engine.run_timers())
    try:
        engine.apply(engine.allocator.declare("j", 2))
        await until(
            lambda: sample(metrics, "rmd_start_throttle_trips_total") == 1,
            what="the start-failure limit to trip",
        )
        # counted as start failures (not sent again as RBAC or quota would be), each a new
        # pod name, and paced: two creates, then none until the retry interval
        assert sample(metrics, "rmd_start_failures_total") == 2
        assert sample(metrics, "rmd_pod_create_failures_total", reason="AdmissionDenied") == 2
        assert len(gateway.create_errors) == 8
        reason = engine.allocator.job_view("j").unfulfilled_reason or ""
        assert "AdmissionDenied" in reason
        assert "maximum cpu usage per Container is 100m" in reason
    finally:
        timers.cancel()
        await engine.close()


async def test_a_create_the_api_server_could_not_take_is_sent_again_not_counted(
    make_engine: EngineFactory, background: Background
) -> None:
    engine, gateway, metrics = make_engine(create_retry_base=0.01, create_retry_max=0.02)
    gateway.create_errors.append(
        # as the gateway classifies a refused connection (its own from_exception)
        PodCreateError.from_exception(aiohttp.ClientConnectionError("connection refused"))
    )
    timers = background.start(engine.run_timers())
    try:
        engine.apply(engine.allocator.declare("j", 2))
        await until(lambda: bool(gateway.created), what="the create sent again")
        assert gateway.created == ["c-taskmanager-1-1"]  # the same pod, not a replacement
        assert sample(metrics, "rmd_start_failures_total") == 0
        assert states(engine) == {"c-taskmanager-1-1": TaskManagerState.PENDING}
    finally:
        timers.cancel()
        await engine.close()


async def test_a_failed_delete_is_tried_again_until_it_succeeds(make_engine: EngineFactory) -> None:
    engine, gateway, metrics = make_engine()
    engine.apply(engine.allocator.declare("j", 2))
    await until(lambda: bool(gateway.created), what="pod created")
    name = gateway.created[0]
    gateway.delete_errors += [
        PodDeleteError("ServiceUnavailable", "etcd leader changed", retriable=True, status=503),
        PodDeleteError("ServiceUnavailable", "etcd leader changed", retriable=True, status=503),
    ]
    engine.apply(engine.allocator.remove_job("j"))  # the pending pod is cancelled
    await until(lambda: gateway.deleted == [name], what="delete retried until done")
    assert sample(metrics, "rmd_pods_deleted_total", reason="excess") == 1
    await engine.close()


async def test_wait_for_job_wakes_on_the_change_that_makes_it_true(
    make_engine: EngineFactory, background: Background
) -> None:
    engine, _, _ = make_engine()
    engine.apply(engine.allocator.declare("j", 2))
    checks = 0

    def fulfilled() -> bool:
        nonlocal checks
        checks += 1
        return engine.allocator.job_summary("j").fulfilled

    waiter = background.start(engine.wait_for_job("j", fulfilled, timeout=5))
    await until(lambda: bool(states(engine)), what="TaskManager requested")
    (name,) = states(engine)
    engine.apply(engine.allocator.pod_observed(PodObservation(name, "Running", "n", "127.1.0.1")))
    engine.apply(engine.allocator.declare("other", 0))  # another job: not this one's change
    for _ in range(3):  # let a wrongly woken waiter run
        await asyncio.sleep(0)
    assert not waiter.done()
    assert checks == 1  # not woken by changes that leave job j as it was
    engine.apply(engine.allocator.register(name, address="127.1.0.1:6122", slots=2))
    assert await within(waiter, seconds=1, what="the waiter to wake") is True
    assert checks == 2
    assert await engine.wait_for_job("j", lambda: False, timeout=0.05) is False
    await engine.close()


async def test_timers_release_an_idle_taskmanager_at_the_timeout(
    make_engine: EngineFactory, background: Background
) -> None:
    engine, gateway, _ = make_engine(idle_timeout=0.2)
    timers = background.start(engine.run_timers())
    try:
        engine.apply(engine.allocator.declare("j", 2))
        await until(lambda: bool(gateway.created), what="pod created")
        name = gateway.created[0]
        engine.apply(engine.allocator.register(name, address="127.1.0.1:6122", slots=2))
        loop = asyncio.get_running_loop()
        freed_at = loop.time()
        engine.apply(engine.allocator.declare("j", 0))
        await until(lambda: gateway.deleted == [name], what="idle TaskManager released")
        assert loop.time() - freed_at >= 0.2
    finally:
        timers.cancel()
        await engine.close()


async def test_ready_only_after_adoption_and_a_synced_watch(make_engine: EngineFactory) -> None:
    engine, _, _ = make_engine()
    synced = False
    engine.set_watch_synced_probe(lambda: synced)
    assert not engine.ready
    engine.on_snapshot([PodObservation("c-taskmanager-4-1", "Running", "n", "127.1.0.9")])
    assert not engine.ready
    synced = True
    assert engine.ready
    # Adoption took the live pod and moved on to the next attempt.
    assert states(engine) == {"c-taskmanager-4-1": TaskManagerState.PENDING}
    assert engine.allocator.attempt == 5
    await engine.close()


async def test_a_standby_keeps_a_warm_view_and_decides_nothing_until_it_adopts(
    make_engine: EngineFactory,
) -> None:
    engine, gateway, _ = make_engine(standby=True)
    engine.set_watch_synced_probe(lambda: True)
    assert not engine.ready
    assert engine.warm_view() is None  # no LIST yet: recovery would LIST itself
    engine.on_snapshot(
        [PodObservation(f"c-taskmanager-3-{i}", "Running", "n", "1.2.3.4") for i in (1, 2)]
    )
    assert engine.ready  # a warm standby is ready (it sends callers to the leader)
    engine.on_pod_event("ADDED", PodObservation("c-taskmanager-3-3", "Running", "n", "1.2.3.5"))
    engine.on_pod_event("DELETED", PodObservation("c-taskmanager-3-1", "Running", "n", "1.2.3.4"))
    assert states(engine) == {}  # nothing adopted, nothing decided while standing by
    warm = engine.warm_view()
    assert warm is not None
    assert sorted(pod.name for pod in warm) == ["c-taskmanager-3-2", "c-taskmanager-3-3"]
    engine.adopt(warm)  # what the start-up recovery does when this daemon becomes the leader
    assert not engine.standby
    assert engine.warm_view() is None
    assert states(engine) == {
        "c-taskmanager-3-2": TaskManagerState.PENDING,
        "c-taskmanager-3-3": TaskManagerState.PENDING,
    }
    assert engine.allocator.attempt == 4
    assert engine.ready
    engine.on_pod_event("DELETED", PodObservation("c-taskmanager-3-2", "Running", "n", "1.2.3.4"))
    assert "c-taskmanager-3-2" not in states(engine)  # events reach the allocator now
    assert gateway.created == []
    assert gateway.deleted == []


@pytest.mark.parametrize("during", ["create"])
async def test_close_cancels_work_in_flight(during: str, make_engine: EngineFactory) -> None:
    engine, gateway, _ = make_engine()
    gateway.hold_creates.clear()
    engine.apply(engine.allocator.declare("j", 2))
    await asyncio.sleep(0)  # the create task starts and blocks in the gateway
    await within(engine.close(), seconds=1, what="the engine to close")
    assert gateway.created == []
    engine.apply(engine.allocator.declare("j", 4))  # after close: nothing is started
    gateway.hold_creates.set()
    await asyncio.sleep(0.01)
    assert gateway.created == []


async def test_timers_stop_when_cancelled_just_as_state_changes(
    make_engine: EngineFactory, background: Background
) -> None:
    """A cancellation that lands right as the timer task is woken must not be lost (Python
    3.11's asyncio.wait_for swallows it then; the daemon hung on shutdown that way)."""
    engine, gateway, _ = make_engine()
    gateway.hold_creates.clear()
    engine.apply(engine.allocator.declare("j", 2))  # a registration deadline: timers wait on it
    assert engine.allocator.next_deadline() is not None
    for wake_steps in range(4):
        timers = background.start(engine.run_timers())
        for _ in range(3):
            await asyncio.sleep(0)  # the timer task is now waiting for a change
        engine.apply([])  # a change wakes it ...
        for _ in range(wake_steps):
            await asyncio.sleep(0)  # ... and the cancellation lands a few steps later
        timers.cancel()
        done, _ = await asyncio.wait({timers}, timeout=2)
        assert timers in done, f"run_timers swallowed its cancellation (after {wake_steps})"
    await engine.close()


async def test_a_list_sent_before_a_create_was_answered_does_not_lose_the_pod(
    make_engine: EngineFactory,
) -> None:
    engine, gateway, _ = make_engine()
    engine.on_snapshot([])  # adopted: nothing there yet
    gateway.hold_creates.clear()
    engine.apply(engine.allocator.declare("j", 2))
    engine.on_list_started()  # a resync LIST goes out while the create is in flight
    gateway.hold_creates.set()
    await until(lambda: set(states(engine).values()) == {TaskManagerState.PENDING}, what="pending")
    engine.on_snapshot([])  # the LIST could not show the pod yet
    assert set(states(engine).values()) == {TaskManagerState.PENDING}
    engine.on_list_started()  # a LIST sent now must show it: its absence means it is gone
    engine.on_snapshot([])
    assert TaskManagerState.PENDING not in set(states(engine).values())
    await engine.close()


async def test_once_the_owner_deployment_is_gone_no_more_pods_are_created(
    make_engine: EngineFactory,
) -> None:
    """Pods deleted from outside make the engine ask whether the JobManager Deployment still
    exists; when it does not, replacements would be garbage-collected at once (an endless
    create/collect loop), so creates stop and count as start failures."""
    owner_alive = True
    questions = 0

    async def owner_exists() -> bool:
        nonlocal questions
        questions += 1
        return owner_alive

    engine, gateway, metrics = make_engine(owner_exists=owner_exists, owner_name="jm")
    engine.apply(engine.allocator.declare("j", 2))
    await until(lambda: gateway.created == ["c-taskmanager-1-1"], what="the first pod")
    await until(lambda: set(states(engine).values()) == {TaskManagerState.PENDING}, what="pending")

    # Deleted from outside while the owner exists: asked once, replaced as usual.
    engine.on_pod_event("DELETED", PodObservation("c-taskmanager-1-1", "Running", "n", "1.2.3.4"))
    await until(lambda: questions == 1, what="the owner asked about")
    await until(lambda: len(gateway.created) == 2, what="the replacement")
    assert sample(metrics, "rmd_start_failures_total") == 0

    # The Deployment is deleted; garbage collection takes the pod.
    owner_alive = False
    engine.on_pod_event("DELETED", PodObservation("c-taskmanager-1-2", "Running", "n", "1.2.3.4"))
    await until(lambda: questions == 2, what="the owner asked about again")
    await until(lambda: sample(metrics, "rmd_start_failures_total") >= 1, what="a create refused")
    assert len(gateway.created) <= 3  # at most the create sent before the answer came
    created = len(gateway.created)
    await engine.close()
    assert len(gateway.created) == created


async def test_a_stalled_daemon_gives_taskmanagers_a_fresh_heartbeat_timeout(
    make_engine: EngineFactory, background: Background
) -> None:
    """The daemon stood still for 72 s (SIGSTOP) with a 50 s heartbeat timeout: the
    TaskManagers' heartbeats wait unread in its sockets, so waking up it must not declare
    them lost — their timeout starts again. Silent for a whole timeout after that, they are."""
    clock = ManualClock()
    engine, gateway, metrics = make_engine(clock=clock, heartbeat_timeout=50.0)
    engine.apply(engine.allocator.declare("j", 2))
    await until(lambda: len(gateway.created) == 1, what="the pod created")
    (name,) = gateway.created
    engine.apply(engine.allocator.pod_observed(PodObservation(name, "Running", "n", "127.1.0.1")))
    engine.apply(engine.allocator.register(name, address="127.1.0.1:6122", slots=2))
    assert engine.allocator.next_deadline() == clock.monotonic() + 50.0
    background.start(engine.run_timers())
    await asyncio.sleep(0)  # the timer task runs to its wait for that deadline

    clock.advance(72.0)  # the stall; then the first thing the loop does is wake the timer
    engine.apply([])
    await until(lambda: sample(metrics, "rmd_daemon_stalls_total") == 1, what="stall noticed")
    assert states(engine) == {name: TaskManagerState.REGISTERED}
    assert sample(metrics, "rmd_taskmanagers_lost_total", reason="heartbeat-timeout") == 0

    clock.advance(51.0)  # a whole timeout without a heartbeat after the stall: lost
    engine.apply([])
    await until(
        lambda: sample(metrics, "rmd_taskmanagers_lost_total", reason="heartbeat-timeout") == 1,
        what="lost after a fresh timeout",
    )


async def test_a_delete_sent_again_for_a_pod_a_list_still_shows_is_counted_once(
    make_engine: EngineFactory,
) -> None:
    engine, gateway, metrics = make_engine()
    engine.adopt([])
    engine.apply(engine.allocator.declare("j", 2))
    await until(lambda: len(gateway.created) == 1, what="the pod created")
    (name,) = gateway.created
    await until(lambda: states(engine) == {name: TaskManagerState.PENDING}, what="pending")
    engine.apply(engine.allocator.declare("j", 0))  # not needed any more: deleted
    await until(lambda: gateway.deleted == [name], what="the delete")
    assert sample(metrics, "rmd_pods_deleted_total", reason="excess") == 1

    engine.on_list_started()  # a LIST still shows it, not being deleted: the delete is resent
    engine.on_snapshot([PodObservation(name, "Running", "n", "127.1.0.1")])
    await until(lambda: gateway.deleted == [name, name], what="the delete sent again")
    assert sample(metrics, "rmd_pods_deleted_total", reason="excess") == 1


async def test_recovery_restores_the_jobs_logs_recovered_and_counts_it(
    make_engine: EngineFactory,
) -> None:
    engine, gateway, metrics = make_engine(recovery_timeout=60.0)
    adopted = "c-taskmanager-1-1"
    with capture_logs() as logs:
        engine.restore(StateSnapshot(jobs=(job_state("j", 2, {adopted: [0, 1]}),)))
        engine.adopt([PodObservation(adopted, phase="Running", node_name="n")])
        assert engine.allocator.status().taskmanagers["requested"] == 0  # the pod is supply
        engine.apply(engine.allocator.register(adopted, address="a:1", slots=2))
    [line] = [entry for entry in logs if entry["event"] == "recovered"]
    assert (line["jobs_restored"], line["adopted"], line["reregistered"]) == (1, 1, 1)
    assert {field.name for field in fields(RecoveryFigures)} <= line.keys()  # every figure
    assert engine.allocator.job_view("j").slots_allocated == 2
    assert sample(metrics, "rmd_recovery_taskmanagers_total", outcome="reregistered") == 1
    assert sample(metrics, "rmd_recovery_jobs_restored") == 1
    assert gateway.created == []


async def test_a_heartbeat_does_not_wake_the_timer_an_earlier_deadline_does(
    make_engine: EngineFactory, background: Background
) -> None:
    clock = ManualClock()
    engine, gateway, _ = make_engine(clock=clock, heartbeat_timeout=50.0)
    engine.apply(engine.allocator.declare("j", 2))
    await until(lambda: len(gateway.created) == 1, what="the pod created")
    (name,) = gateway.created
    engine.apply(engine.allocator.pod_observed(PodObservation(name, "Running", "n", "127.1.0.1")))
    engine.apply(engine.allocator.register(name, address="127.1.0.1:6122", slots=2))
    background.start(engine.run_timers())
    await until(lambda: not engine._timer_wakeup.is_set(), what="the timer asleep")

    clock.advance(10.0)
    engine.apply(engine.allocator.heartbeat(name))  # its deadline moves later: nothing to do
    assert not engine._timer_wakeup.is_set()

    engine.apply(engine.allocator.declare("j", 0))  # idle now: a release 30 s from now
    assert engine._timer_wakeup.is_set()
