"""The Flink follower against a fake Flink REST API (recorded Flink 2.3.0 shapes) and the real
allocator: declarations, rescales, removals, the release gate, outages and bad answers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from rmd.api.app import create_app
from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import ManualClock
from rmd.core.model import DeletePod, UnknownJob
from rmd.core.recovery import StateSnapshot
from rmd.flink.application import ApplicationEnd
from rmd.flink.follower import FlinkFollower, retry_delay
from rmd.flink.rest import FlinkRestClient
from rmd.flink.status import FollowerState
from rmd.metrics import FlinkMetrics
from tests.support.fake_flink import FakeFlink, FakeVertex
from tests.support.waiting import eventually_true
from tests.unit.api_fake_engine import InMemoryEngine, make_metrics

A = "a" * 32
B = "b" * 32
IDLE_TIMEOUT = 30.0
SLOTS_PER_TM = 2


@dataclass
class Rig:
    flink: FakeFlink
    engine: InMemoryEngine
    follower: FlinkFollower
    clock: ManualClock
    registry: CollectorRegistry

    @property
    def allocator(self) -> Allocator:
        return self.engine.allocator

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def start_taskmanagers(self) -> list[str]:
        """What Kubernetes and the agents do: pods start, TaskManagers register with rmd."""
        names = self.engine.start_requested_pods()
        for name in names:
            self.engine.register(name, slots=SLOTS_PER_TM)
        return names

    def advance(self, seconds: float) -> list[str]:
        """Move the clock, fire what is due; the pods deleted."""
        self.clock.advance(seconds)
        before = len(self.engine.applied)
        self.engine.apply(self.allocator.tick())
        return [a.name for a in self.engine.applied[before:] if isinstance(a, DeletePod)]


@pytest.fixture
async def flink() -> AsyncIterator[FakeFlink]:
    async with FakeFlink() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def rig(flink: FakeFlink, session: aiohttp.ClientSession) -> Rig:
    return make_rig(flink, session)


def make_rig(
    flink: FakeFlink,
    session: aiohttp.ClientSession,
    *,
    max_slots: int | None = None,
    engine_class: type[InMemoryEngine] = InMemoryEngine,
    on_application_end: Callable[[ApplicationEnd], None] | None = None,
    usage_interval: float | None = None,
) -> Rig:
    clock = ManualClock()
    settings = AllocatorSettings(
        cluster_id="flink-1",
        slots_per_taskmanager=SLOTS_PER_TM,
        idle_timeout=IDLE_TIMEOUT,
        heartbeat_timeout=1e9,
        max_slots=max_slots,
        external_usage_gate=True,
    )
    engine = engine_class(Allocator(settings, clock=clock))
    registry = CollectorRegistry()
    follower = FlinkFollower(
        engine=engine,
        rest=FlinkRestClient(session, base_url=flink.url, request_timeout=2.0),
        clock=clock,
        poll_interval=0.02,
        usage_interval=usage_interval,
        metrics=FlinkMetrics(registry=registry),
        rng=random.Random(7),
        on_application_end=on_application_end,
    )
    return Rig(flink, engine, follower, clock, registry)


def required(rig: Rig, job_id: str) -> int:
    return rig.allocator.job_view(job_id).slots_required


# ---------------------------------------------------------------------------- demand


async def test_a_new_job_is_declared_with_flinks_job_id(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=4)

    with capture_logs() as logs:
        await rig.follower.poll_once()

    assert required(rig, A) == 4
    assert len(rig.engine.created_pods()) == 2  # 4 slots, 2 per TaskManager
    assert rig.follower.followed_jobs == {A: 4}
    assert rig.metric("rmd_flink_jobs_followed") == 1
    assert rig.metric("rmd_flink_rest_reachable") == 1
    assert rig.follower.status().state is FollowerState.FOLLOWING
    [declared] = [e for e in logs if e["event"] == "flink_job_declared"]
    assert (declared["job"], declared["slots"], declared["previous"]) == (A, 4, None)


async def test_slot_sharing_groups_add_up(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=3, groups=2)
    await rig.follower.poll_once()
    assert required(rig, A) == 6


async def test_the_same_demand_again_changes_nothing(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=4)
    await rig.follower.poll_once()
    applied = len(rig.engine.applied)
    await rig.follower.poll_once()
    assert rig.engine.applied[applied:] == []


async def test_default_scheduler_job_is_read_once_and_never_asked_for_requirements(
    rig: Rig,
) -> None:
    rig.flink.add_job(A, parallelism=2)
    for _ in range(3):
        await rig.follower.poll_once()
    assert rig.flink.asked("/jobs/overview") == 3
    assert rig.flink.asked(f"/jobs/{A}") == 1
    assert rig.flink.asked(f"/jobs/{A}/resource-requirements") == 0


async def test_adaptive_job_declares_its_upper_bounds_and_rescales(rig: Rig) -> None:
    job = rig.flink.add_job(A, parallelism=2, groups=2, scheduler="Adaptive")
    await rig.follower.poll_once()
    assert required(rig, A) == 4

    for vertex in job.vertices:  # PUT /jobs/:id/resource-requirements with upper bound 3
        vertex.upper_bound = 3
    await rig.follower.poll_once()
    assert required(rig, A) == 6
    assert rig.follower.followed_jobs == {A: 6}
    assert rig.flink.asked(f"/jobs/{A}") == 1
    assert rig.flink.asked(f"/jobs/{A}/resource-requirements") == 2

    for vertex in job.vertices:  # and down again
        vertex.upper_bound = 1
    await rig.follower.poll_once()
    assert required(rig, A) == 2


async def test_without_scheduler_type_flink_1x_is_probed_once(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=3, scheduler=None)
    await rig.follower.poll_once()
    await rig.follower.poll_once()
    assert required(rig, A) == 3
    assert rig.flink.asked(f"/jobs/{A}/resource-requirements") == 1  # the 500 said "default"


@pytest.mark.parametrize("state", ["FINISHED", "FAILED", "CANCELED"])
async def test_a_terminal_job_is_removed(rig: Rig, state: str) -> None:
    job = rig.flink.add_job(A, parallelism=2)
    rig.flink.add_job(B, parallelism=2)
    await rig.follower.poll_once()
    job.state = state

    with capture_logs() as logs:
        await rig.follower.poll_once()

    with pytest.raises(UnknownJob):
        rig.allocator.job_view(A)
    assert required(rig, B) == 2
    assert rig.follower.followed_jobs == {B: 2}
    assert [e["why"] for e in logs if e["event"] == "flink_job_removed"] == [f"job {state}"]


async def test_a_job_that_left_the_overview_is_removed(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=2)
    await rig.follower.poll_once()
    del rig.flink.jobs[A]
    await rig.follower.poll_once()
    assert rig.allocator.job_views() == []


async def test_after_a_restart_its_restored_jobs_are_followed_and_a_finished_one_removed(
    flink: FakeFlink, session: aiohttp.ClientSession
) -> None:
    before = make_rig(flink, session)
    job = flink.add_job(A, parallelism=2)
    flink.add_job(B, parallelism=4)
    await before.follower.poll_once()
    before.allocator.declare("http-job", 2)  # over the HTTP API: not the follower's
    state = StateSnapshot.from_json(before.allocator.state_snapshot().to_json())
    job.state = "FINISHED"  # while rmd was down

    after = make_rig(flink, session)
    after.allocator.restore(state)
    after.engine.apply(after.allocator.adopt([]))
    await after.follower.poll_once()
    assert after.follower.followed_jobs == {B: 4}
    assert {view.job_id for view in after.allocator.job_views()} == {B, "http-job"}


async def test_a_job_deleted_through_the_http_api_meanwhile_is_no_error(rig: Rig) -> None:
    job = rig.flink.add_job(A, parallelism=2)
    await rig.follower.poll_once()
    rig.engine.apply(rig.allocator.remove_job(A))
    job.state = "CANCELED"
    await rig.follower.poll_once()
    assert rig.follower.followed_jobs == {}
    assert rig.follower.status().state is FollowerState.FOLLOWING


# ---------------------------------------------------------------------------- release gate


async def test_cancelling_one_job_never_releases_a_taskmanager_the_other_uses(rig: Rig) -> None:
    job_a = rig.flink.add_job(A, parallelism=2)
    job_b = rig.flink.add_job(B, parallelism=2)
    await rig.follower.poll_once()
    first, second = rig.start_taskmanagers()  # rmd's books: A on the first, B on the second
    assert rig.allocator.taskmanager_view(first).slots[0].job_id == A
    # Flink spread both jobs over both TaskManagers.
    rig.flink.add_taskmanager(first, slots=2, jobs=[A, B])
    rig.flink.add_taskmanager(second, slots=2, jobs=[A, B])
    await rig.follower.poll_once()

    job_a.state = "CANCELED"
    rig.flink.taskmanagers[first].jobs = [B]
    rig.flink.taskmanagers[second].jobs = [B]
    await rig.follower.poll_once()
    assert rig.allocator.taskmanager_view(first).slots_allocated == 0  # idle to rmd ...
    for _ in range(5):  # ... but not to Flink: kept however long
        assert rig.advance(IDLE_TIMEOUT) == []
        await rig.follower.poll_once()
    assert rig.metric("rmd_flink_taskmanagers", usage="busy") == 2

    job_b.state = "CANCELED"
    rig.flink.taskmanagers[first].jobs = []
    rig.flink.taskmanagers[second].jobs = []
    await rig.follower.poll_once()
    assert rig.metric("rmd_flink_taskmanagers", usage="idle") == 2
    assert rig.advance(IDLE_TIMEOUT - 0.001) == []
    assert sorted(rig.advance(0.001)) == [first, second]


async def test_a_taskmanager_flink_does_not_list_is_never_released_as_idle(rig: Rig) -> None:
    job = rig.flink.add_job(A, parallelism=2)
    await rig.follower.poll_once()
    [name] = rig.start_taskmanagers()
    rig.flink.add_taskmanager("started-elsewhere", slots=4)
    job.state = "FINISHED"

    with capture_logs() as logs:
        await rig.follower.poll_once()
        await rig.follower.poll_once()

    assert rig.advance(3600) == []
    assert rig.allocator.taskmanager_view(name).state == "registered"
    assert rig.metric("rmd_flink_taskmanagers", usage="unmanaged") == 1
    unmanaged = [e for e in logs if e["event"] == "flink_taskmanager_not_managed"]
    assert [e["taskmanager"] for e in unmanaged] == ["started-elsewhere"]  # said once


# ---------------------------------------------------------------------------- outages


async def test_while_flink_is_down_demand_is_kept_and_nothing_released(rig: Rig) -> None:
    job = rig.flink.add_job(A, parallelism=4)
    await rig.follower.poll_once()
    names = rig.start_taskmanagers()
    for name in names:
        rig.flink.add_taskmanager(name, slots=2, jobs=[A, A])
    await rig.follower.poll_once()

    await rig.flink.down()
    with capture_logs() as logs:
        await rig.follower.poll_once()
        rig.clock.advance(12)
        await rig.follower.poll_once()

    status = rig.follower.status()
    assert status.state is FollowerState.FAILING
    assert status.reachable is False
    assert "is unreachable for 12 s" in status.detail()
    assert "keeps the last demand of 1 Flink job and" in status.detail()
    assert required(rig, A) == 4
    assert rig.advance(3600) == []
    assert rig.metric("rmd_flink_rest_reachable") == 0
    assert rig.metric("rmd_flink_poll_failures_total", reason="unreachable") == 2
    assert [e["event"] for e in logs].count("flink_rest_failing") == 1  # not once per poll

    # Back: the job ended meanwhile and Flink freed the slots. The idle timer starts now ...
    job.state = "CANCELED"
    for taskmanager in rig.flink.taskmanagers.values():
        taskmanager.jobs = []
    await rig.flink.up()
    with capture_logs() as logs:
        await rig.follower.poll_once()
    assert [e["event"] for e in logs if e["event"].startswith("flink_rest")] == [
        "flink_rest_recovered"
    ]
    assert rig.allocator.job_views() == []
    assert rig.advance(IDLE_TIMEOUT - 10) == []
    # ... and stops when Flink goes away again before it ran out.
    await rig.flink.down()
    await rig.follower.poll_once()
    assert rig.advance(3600) == []
    await rig.flink.up()
    await rig.follower.poll_once()
    assert rig.advance(IDLE_TIMEOUT - 0.001) == []
    assert sorted(rig.advance(0.001)) == sorted(names)


async def test_readyz_says_what_rmd_does_while_flink_is_down(aiohttp_client: Any, rig: Rig) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(
            engine=rig.engine,
            metrics=make_metrics(rig.engine),
            flink_status=rig.follower.status,
        )
    )
    starting = await (await client.get("/readyz")).json()
    assert starting["flink"]["state"] == "starting"

    await rig.flink.down()
    await rig.follower.poll_once()
    response = await client.get("/readyz")

    assert response.status == 200  # TaskManagers still need rmd: it stays ready
    body = await response.json()
    assert body["status"] == "ready"
    assert body["flink"]["state"] == "failing"
    assert body["flink"]["reachable"] is False
    assert body["flink"]["rest_url"] == rig.flink.url
    assert "releases no TaskManager as idle until Flink answers again" in body["flink"]["detail"]


async def test_readyz_without_a_follower_has_no_flink_part(aiohttp_client: Any, rig: Rig) -> None:
    client = await aiohttp_client(create_app(engine=rig.engine, metrics=make_metrics(rig.engine)))
    assert await (await client.get("/readyz")).json() == {"status": "ready"}


# ---------------------------------------------------------------------------- bad answers


async def test_a_malformed_overview_keeps_every_declaration(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=2)
    await rig.follower.poll_once()
    rig.flink.overrides["/jobs/overview"] = (200, {"jobs": [{"jid": A}]})

    with capture_logs() as logs:
        await rig.follower.poll_once()

    assert required(rig, A) == 2
    assert rig.metric("rmd_flink_poll_failures_total", reason="malformed") == 1
    [failing] = [e for e in logs if e["event"] == "flink_rest_failing"]
    assert "jobs[0].state is missing" in failing["error"]
    status = rig.follower.status()
    assert status.reachable is True
    assert "is answering badly" in status.detail()


async def test_a_malformed_job_is_reported_once_and_the_others_are_declared(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=2)
    rig.flink.add_job(B, parallelism=2)
    rig.flink.overrides[f"/jobs/{A}"] = (200, {"jid": A, "state": "RUNNING", "vertices": 3})

    with capture_logs() as logs:
        await rig.follower.poll_once()
        await rig.follower.poll_once()

    assert rig.follower.followed_jobs == {B: 2}
    assert rig.metric("rmd_flink_job_problems_total", reason="malformed-answer") == 1
    [problem] = [e for e in logs if e["event"] == "flink_job_problem"]
    assert problem["job"] == A
    assert "vertices is the number 3, expected a list" in problem["detail"]

    del rig.flink.overrides[f"/jobs/{A}"]  # Flink answers properly again
    await rig.follower.poll_once()
    assert rig.follower.followed_jobs == {A: 2, B: 2}


async def test_an_error_status_keeps_the_last_demand(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=2)
    await rig.follower.poll_once()
    rig.flink.overrides["/jobs/overview"] = (503, {"errors": ["Service temporarily unavailable"]})
    await rig.follower.poll_once()
    assert required(rig, A) == 2
    assert rig.metric("rmd_flink_poll_failures_total", reason="http-error") == 1
    assert "status 503: Service temporarily unavailable" in str(rig.follower.status().last_error)


async def test_a_non_json_answer_is_malformed_not_a_crash(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=2)
    rig.flink.overrides["/taskmanagers"] = (200, "not a list")
    await rig.follower.poll_once()
    assert required(rig, A) == 2
    assert rig.metric("rmd_flink_poll_failures_total", reason="malformed") == 1


async def test_demand_above_the_slot_cap_is_declared_logged_and_counted(
    flink: FakeFlink, session: aiohttp.ClientSession
) -> None:
    rig = make_rig(flink, session, max_slots=4)
    flink.add_job(A, parallelism=6)

    with capture_logs() as logs:
        await rig.follower.poll_once()
        await rig.follower.poll_once()

    assert required(rig, A) == 6
    assert "slotmanager.number-of-slots.max" in str(rig.allocator.job_view(A).unfulfilled_reason)
    assert rig.metric("rmd_flink_job_problems_total", reason="above-slot-cap") == 1
    [problem] = [e for e in logs if e["event"] == "flink_job_problem"]
    assert "needs 6 slots, more than slotmanager.number-of-slots.max 4" in problem["detail"]


async def test_an_absurd_demand_is_not_declared(rig: Rig) -> None:
    job = rig.flink.add_job(A, parallelism=30_000, groups=2)
    job.vertices.append(FakeVertex("third", 50_000, "a-third-group"))  # 110,000 slots
    rig.flink.add_job(B, parallelism=2)

    outcome = await rig.follower.poll_once()

    assert outcome.ok  # Flink answered well; the job is what is wrong
    assert rig.follower.followed_jobs == {B: 2}
    assert rig.metric("rmd_flink_job_problems_total", reason="malformed-answer") == 1


async def test_an_adaptive_job_whose_requirements_fail_falls_back_to_its_parallelism(
    rig: Rig,
) -> None:
    rig.flink.add_job(A, parallelism=3, scheduler="Adaptive")
    rig.flink.overrides[f"/jobs/{A}/resource-requirements"] = (
        500,
        {"errors": ["Internal server error.", "<Exception on server side:\nBoom: no\n>"]},
    )
    await rig.follower.poll_once()
    assert required(rig, A) == 3
    assert rig.metric("rmd_flink_job_problems_total", reason="unknown-scheduler-answer") == 1


async def test_an_unknown_scheduler_uses_the_parallelism_and_says_so(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=3, scheduler="Quantum")
    with capture_logs() as logs:
        await rig.follower.poll_once()
    assert required(rig, A) == 3
    [problem] = [e for e in logs if e["event"] == "flink_job_problem"]
    assert "scheduler 'Quantum'" in problem["detail"]


# ---------------------------------------------------------------------------- the loop


class CountingReadiness(InMemoryEngine):
    """Counts how often the follower asked whether the daemon is ready."""

    asked = 0
    is_ready = False

    @property
    def ready(self) -> bool:
        self.asked += 1
        return self.is_ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.is_ready = value


async def test_nothing_is_declared_before_the_daemon_is_ready(
    flink: FakeFlink, session: aiohttp.ClientSession
) -> None:
    rig = make_rig(flink, session, engine_class=CountingReadiness)
    engine = rig.engine
    assert isinstance(engine, CountingReadiness)
    engine.ready = False
    flink.add_job(A, parallelism=2)
    task = asyncio.create_task(rig.follower.run())
    try:
        await eventually_true(lambda: engine.asked >= 5, what="five rounds of the loop")
        assert flink.requests == []
        assert rig.follower.status().state is FollowerState.STARTING
        engine.ready = True
        await eventually_true(
            lambda: rig.follower.followed_jobs == {A: 2}, what="the job declared once ready"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_jobs_are_read_every_poll_and_taskmanager_usage_every_usage_interval(
    flink: FakeFlink, session: aiohttp.ClientSession
) -> None:
    """A submitted job's demand is seen within the (short) poll interval; the TaskManager
    reads, which grow with the cluster and only time idle releases, come less often."""
    rig = make_rig(flink, session, usage_interval=5.0)  # the rig's clock is manual
    task = asyncio.create_task(rig.follower.run())
    try:
        await eventually_true(
            lambda: flink.asked("/jobs/overview") >= 5, what="five polls of the jobs"
        )
        assert flink.asked("/taskmanagers") == 1  # the first poll; the clock has not moved
        flink.add_job(A, parallelism=2)
        await eventually_true(lambda: rig.follower.followed_jobs == {A: 2}, what="declared")
        assert flink.asked("/taskmanagers") == 1
        rig.clock.advance(5.0)
        await eventually_true(
            lambda: flink.asked("/taskmanagers") == 2, what="usage read once it is due"
        )
        jobs_polls = flink.asked("/jobs/overview")
        await eventually_true(
            lambda: flink.asked("/jobs/overview") >= jobs_polls + 5, what="more job polls"
        )
        assert flink.asked("/taskmanagers") == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_retry_delay_backs_off_with_jitter_and_honours_retry_after() -> None:
    rng = random.Random(1)
    delays = [
        retry_delay(n, interval=2.0, max_backoff=30.0, retry_after=None, rng=rng)
        for n in range(1, 9)
    ]
    assert all(2.0 <= d <= 30.0 for d in delays)
    assert delays[0] <= 2.0 + 1e-9  # first retry: one interval
    assert max(delays[4:]) > 8.0  # grows
    assert retry_delay(1, interval=2.0, max_backoff=30.0, retry_after=20.0, rng=rng) >= 20.0
    assert retry_delay(1, interval=2.0, max_backoff=30.0, retry_after=600.0, rng=rng) == 30.0


# ---------------------------------------------------------------------------- application mode


async def test_an_application_that_ended_is_reported_once_from_flinks_applications(
    flink: FakeFlink, session: aiohttp.ClientSession
) -> None:
    ended: list[ApplicationEnd] = []
    rig = make_rig(flink, session, on_application_end=ended.append)
    flink.applications = {"c" * 32: "RUNNING"}
    flink.add_job(A, parallelism=2)
    await rig.follower.poll_once()
    assert ended == []
    assert required(rig, A) == 2

    flink.jobs[A].state = "FINISHED"  # the job ended, the application not yet (main() runs)
    await rig.follower.poll_once()
    assert ended == []
    assert rig.follower.followed_jobs == {}  # its demand is gone all the same

    flink.applications = {"c" * 32: "FINISHED"}
    with capture_logs() as logs:
        await rig.follower.poll_once()
        await rig.follower.poll_once()
    assert [(end.state, end.describe()) for end in ended] == [("FINISHED", f"{'c' * 32} FINISHED")]
    assert rig.follower.application_ended == ended[0]
    assert [e["state"] for e in logs if e["event"] == "flink_application_ended"] == ["FINISHED"]
    assert flink.asked("/applications/overview") == 3  # not asked again once it ended


async def test_on_flink_1_x_the_jobs_tell_and_applications_are_asked_once(
    flink: FakeFlink, session: aiohttp.ClientSession
) -> None:
    ended: list[ApplicationEnd] = []
    rig = make_rig(flink, session, on_application_end=ended.append)
    await rig.follower.poll_once()  # nothing submitted yet: not ended
    flink.add_job(A, parallelism=2, scheduler=None)
    await rig.follower.poll_once()
    flink.jobs[A].state = "FAILED"
    await rig.follower.poll_once()
    assert [end.state for end in ended] == ["FAILED"]
    assert flink.asked("/applications/overview") == 1  # 404: Flink 1.x has none
    assert rig.follower.status().state is FollowerState.FOLLOWING


async def test_an_unreadable_applications_answer_decides_nothing(
    flink: FakeFlink, session: aiohttp.ClientSession
) -> None:
    ended: list[ApplicationEnd] = []
    rig = make_rig(flink, session, on_application_end=ended.append)
    flink.add_job(A, parallelism=2, state="FINISHED")
    flink.applications = {"c" * 32: "FINISHED"}
    flink.overrides["/applications/overview"] = (500, {"errors": ["Internal server error."]})
    outcome = await rig.follower.poll_once()
    assert not outcome.ok
    assert ended == []  # the jobs alone do not decide where Flink lists applications
    del flink.overrides["/applications/overview"]
    await rig.follower.poll_once()
    assert [end.state for end in ended] == ["FINISHED"]


async def test_without_a_handler_applications_are_never_asked(rig: Rig) -> None:
    rig.flink.add_job(A, parallelism=2, state="FINISHED")
    await rig.follower.poll_once()
    assert rig.flink.asked("/applications/overview") == 0
    assert rig.follower.application_ended is None
