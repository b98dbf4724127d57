"""rmd.client against the daemon's real aiohttp application (real allocator, in-memory edge)."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from rmd.api.app import create_app
from rmd.client import (
    InvalidValue,
    JobSlot,
    JobView,
    NotFound,
    NotReady,
    RmdClient,
    RmdProblem,
    RmdUnreachable,
    ServerError,
    SyncRmdClient,
    Unauthorized,
    UnexpectedAnswer,
)
from tests.support.background import Background
from tests.support.waiting import eventually_true
from tests.unit.api_fake_engine import InMemoryEngine, make_engine, make_metrics

TOKEN = "s3cret"
ServerFactory = Any  # pytest-aiohttp's aiohttp_server fixture


class SleepRecorder:
    """The client's injected sleep: records each wait instead of waiting; ``then`` runs at
    the first one (e.g. the daemon becomes ready)."""

    def __init__(self, then: Any = None) -> None:
        self.waits: list[float] = []
        self._then = then

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self._then is not None:
            self._then()
            self._then = None


def app_for(engine: InMemoryEngine) -> web.Application:
    return create_app(
        engine=engine,
        metrics=make_metrics(engine),
        auth_token=TOKEN,
        refuse_v1_until_ready=True,
        max_wait=30.0,
    )


@pytest.fixture
def engine() -> InMemoryEngine:
    return make_engine(slots_per_taskmanager=2, max_slots=8)


@pytest.fixture
async def server(aiohttp_server: ServerFactory, engine: InMemoryEngine) -> TestServer:
    return await aiohttp_server(app_for(engine))  # type: ignore[no-any-return]


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def rmd(server: TestServer) -> AsyncIterator[RmdClient]:
    async with RmdClient(url_of(server), token=TOKEN, rng=random.Random(3)) as client:
        yield client


def start_taskmanagers(engine: InMemoryEngine) -> list[str]:
    names = engine.start_requested_pods()
    for number, name in enumerate(names, start=1):
        engine.register(name, address=f"10.0.0.{number}:6122", slots=2)
    return names


# ---------------------------------------------------------------------------- the calls


async def test_declare_answers_a_typed_job_view(rmd: RmdClient, engine: InMemoryEngine) -> None:
    view = await rmd.declare("job-1", 3)
    assert (view.job_id, view.slots_required, view.slots_allocated) == ("job-1", 3, 0)
    assert view.fulfilled is False
    assert view.slots == ()
    assert len(engine.created_pods()) == 2


async def test_wait_fulfilled_long_polls_the_compact_view(
    aiohttp_server: ServerFactory, engine: InMemoryEngine, background: Background
) -> None:
    app = app_for(engine)
    queries: list[dict[str, str]] = []

    async def note(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/v1/jobs/job-1" and request.method == "GET":
            queries.append(dict(request.query))

    app.on_response_prepare.append(note)
    server = await aiohttp_server(app)
    async with RmdClient(url_of(server), token=TOKEN, rng=random.Random(3)) as rmd:
        await rmd.declare("job-1", 4)
        waiting = background.start(rmd.wait_fulfilled("job-1", timeout=20))
        await eventually_true(lambda: len(engine._job_waiters) > 0, what="the long poll")
        start_taskmanagers(engine)
        view = await waiting

    assert view.fulfilled
    assert len(view.slots) == 4
    first, *polls, last = queries
    assert first == {}
    assert last == {}
    assert polls
    assert all(query.get("slots") == "false" and "wait" in query for query in polls)


async def test_wait_fulfilled_returns_once_the_slots_are_there(
    rmd: RmdClient, engine: InMemoryEngine, background: Background
) -> None:
    await rmd.declare("job-1", 4)
    waiting = background.start(rmd.wait_fulfilled("job-1", timeout=20))
    await eventually_true(lambda: len(engine._job_waiters) > 0, what="the long poll is waiting")
    first, second = start_taskmanagers(engine)

    view = await waiting

    assert view.fulfilled
    assert set(view.slots) == {
        JobSlot(f"{first}/0", first, "10.0.0.1:6122"),
        JobSlot(f"{first}/1", first, "10.0.0.1:6122"),
        JobSlot(f"{second}/0", second, "10.0.0.2:6122"),
        JobSlot(f"{second}/1", second, "10.0.0.2:6122"),
    }


async def test_wait_fulfilled_gives_up_with_the_reason(rmd: RmdClient) -> None:
    await rmd.declare("big", 10)  # the cap is 8
    view = await rmd.wait_fulfilled("big", timeout=0.3)
    assert not view.fulfilled
    assert "slotmanager.number-of-slots.max" in str(view.unfulfilled_reason)


async def test_job_long_poll_answers_the_current_view_when_wait_runs_out(rmd: RmdClient) -> None:
    await rmd.declare("job-1", 2)
    view = await rmd.job("job-1", wait=0.2)
    assert view.slots_required == 2
    assert not view.fulfilled


async def test_release_and_list(rmd: RmdClient) -> None:
    await rmd.declare("a", 1)
    await rmd.declare("b", 2)
    assert [(v.job_id, v.slots_required) for v in await rmd.jobs()] == [("a", 1), ("b", 2)]

    await rmd.release("a")

    assert [v.job_id for v in await rmd.jobs()] == ["b"]
    with pytest.raises(NotFound) as missing:
        await rmd.release("a")
    problem = missing.value
    assert (problem.type, problem.title, problem.status) == (
        "urn:rmd:problem:unknown-job",
        "Unknown job",
        404,
    )
    assert "declare its requirements first" in problem.detail


# ---------------------------------------------------------------------------- errors


async def test_a_wrong_token_raises_unauthorized(server: TestServer) -> None:
    async with RmdClient(url_of(server), token="wrong") as client:
        with pytest.raises(Unauthorized) as raised:
            await client.jobs()
    assert raised.value.status == 401
    assert raised.value.type == "urn:rmd:problem:unauthorized"
    assert raised.value.detail


async def test_bad_values_raise_invalid_value_naming_the_field(rmd: RmdClient) -> None:
    with pytest.raises(InvalidValue) as raised:
        await rmd.declare("job-1", -1)
    assert raised.value.status == 422
    assert raised.value.field == "slots"
    with pytest.raises(InvalidValue):
        await rmd.declare("no spaces please", 1)
    with pytest.raises(ValueError, match="wait must be a positive"):
        await rmd.job("job-1", wait=0)


async def test_not_ready_is_retried_after_retry_after_with_jitter(
    server: TestServer, engine: InMemoryEngine
) -> None:
    engine.adopted = False
    sleep = SleepRecorder(then=lambda: setattr(engine, "adopted", True))
    async with RmdClient(url_of(server), token=TOKEN, sleep=sleep) as client:
        view = await client.declare("job-1", 2)
    assert view.slots_required == 2
    [wait] = sleep.waits
    assert 1.0 <= wait <= 1.25  # the daemon's Retry-After: 1, plus at most 25 % jitter


async def test_not_ready_for_good_raises_after_the_attempts(
    server: TestServer, engine: InMemoryEngine
) -> None:
    engine.adopted = False
    sleep = SleepRecorder()
    async with RmdClient(url_of(server), token=TOKEN, sleep=sleep, max_attempts=3) as client:
        with pytest.raises(NotReady) as raised:
            await client.jobs()
    assert len(sleep.waits) == 2
    assert raised.value.status == 503
    assert raised.value.retry_after == 1.0
    assert raised.value.type == "urn:rmd:problem:not-ready"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_no_daemon_retries_gets_but_not_deletes() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sleep = SleepRecorder()
    async with RmdClient(url, sleep=sleep, max_attempts=4, rng=random.Random(1)) as client:
        with pytest.raises(RmdUnreachable, match="GET /v1/jobs"):
            await client.jobs()
        assert len(sleep.waits) == 3
        assert sleep.waits == sorted(sleep.waits)  # backing off
        with pytest.raises(RmdUnreachable, match="DELETE /v1/jobs/j"):
            await client.release("j")
        assert len(sleep.waits) == 3  # a DELETE is never sent twice


# ---------------------------------------------------------------------------- sync


@contextmanager
def daemon_app_in_a_thread() -> Iterator[tuple[str, InMemoryEngine]]:
    """The API on its own event loop in a thread, for the blocking client."""
    engine = make_engine(slots_per_taskmanager=2)
    started = threading.Event()
    address: list[str] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        runner = web.AppRunner(app_for(engine))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        address.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        started.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    try:
        assert started.wait(timeout=10), "the API did not start"
        yield address[0], engine
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def test_the_sync_client_does_the_same() -> None:
    with (
        daemon_app_in_a_thread() as (url, engine),
        SyncRmdClient(url, token=TOKEN) as rmd,
    ):
        assert rmd.declare("job-1", 2).slots_required == 2
        assert [view.job_id for view in rmd.jobs()] == ["job-1"]
        assert not rmd.job("job-1").fulfilled
        assert not rmd.wait_fulfilled("job-1", timeout=0.2).fulfilled
        rmd.release("job-1")
        with pytest.raises(NotFound):
            rmd.job("job-1")
        assert len(engine.created_pods()) == 1


# ---------------------------------------------------------------------------- parsing


def test_a_job_view_that_breaks_the_contract_is_an_unexpected_answer() -> None:
    good = {
        "job_id": "j",
        "slots_required": 1,
        "slots_allocated": 0,
        "fulfilled": False,
        "slots": [],
        "unfulfilled_reason": None,
        "problems": [],
    }
    assert JobView.from_json(good).job_id == "j"
    with pytest.raises(UnexpectedAnswer, match="field 'slots_required' is '1', expected int"):
        JobView.from_json({**good, "slots_required": "1"})
    with pytest.raises(UnexpectedAnswer, match="a slot is not a JSON object"):
        JobView.from_json({**good, "slots": ["j/0"]})


def test_an_error_without_a_problem_document_still_raises_typed() -> None:
    problem = RmdProblem.from_answer(502, {}, text="<html>Bad Gateway</html>", retry_after=None)
    assert isinstance(problem, ServerError)
    assert (problem.type, problem.title, problem.status) == ("about:blank", "HTTP 502", 502)
    assert problem.detail == "<html>Bad Gateway</html>"
