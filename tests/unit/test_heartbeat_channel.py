"""The heartbeat channel (a WebSocket per TaskManager): the daemon's app with the real
allocator (its Kubernetes edge in memory), the agent's decoding, and the agent against it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from rmd.agent import AgentTiming, run_agent
from rmd.agent.channel import (
    ChannelUnsupported,
    HeartbeatChannel,
    channel_answer,
    close_answer,
    open_channel,
)
from rmd.agent.client import Accepted, Rejected, Unavailable, Unknown
from rmd.api.app import create_app
from rmd.api.keys import CHANNELS
from rmd.api.open_channels import OpenChannels, stale_channels
from rmd.config import agent_env
from rmd.core.clock import ManualClock
from rmd.core.model import TaskManagerState
from rmd.metrics import RmdMetrics
from rmd.retry import Backoff
from tests.support.waiting import eventually_true, within
from tests.unit.api_fake_engine import InMemoryEngine, make_engine, served_api

ClientFactory = Any
TOKEN = "s3cret-token"
HEARTBEAT_TIMEOUT = 50.0  # the allocator's default (heartbeat.timeout)


class Leading:
    def __init__(self) -> None:
        self.is_leader = True
        self.leader_url: str | None = None


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(clock: ManualClock) -> InMemoryEngine:
    return make_engine(slots_per_taskmanager=1, clock=clock)


def app_of(
    engine: InMemoryEngine,
    *,
    auth_token: str | None = None,
    leadership: Leading | None = None,
    idle_timeout: float = 60.0,
) -> web.Application:
    return create_app(
        engine=engine,
        metrics=RmdMetrics(registry=CollectorRegistry(), status=engine.allocator.status),
        auth_token=auth_token,
        leadership=leadership,
        channel_idle_timeout=idle_timeout,
    )


def registered(engine: InMemoryEngine, count: int) -> list[str]:
    engine.apply(engine.allocator.declare("j1", count))
    names = engine.start_requested_pods()
    for name in names:
        engine.register(name, slots=1)
    return names


def channel_path(name: str) -> str:
    return f"/v1/taskmanagers/{name}/heartbeat-channel"


async def handled(websocket: aiohttp.ClientWebSocketResponse) -> None:
    """Every frame sent so far has been handled: the daemon answers a ping only after them."""
    await websocket.ping()
    message = await websocket.receive(timeout=5)
    assert message.type is WSMsgType.PONG, message


async def test_frames_are_heartbeats_and_the_daemon_answers_none(
    aiohttp_client: ClientFactory, engine: InMemoryEngine, clock: ManualClock
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(app_of(engine))
    beating, silent = registered(engine, 2)
    async with client.ws_connect(channel_path(beating), autoping=False) as websocket:
        for _ in range(3):
            clock.advance(HEARTBEAT_TIMEOUT - 10)
            await websocket.send_str("{}")
            await handled(websocket)
        engine.apply(engine.allocator.tick())
        states = {view.taskmanager_id: view.state for view in engine.allocator.taskmanager_views()}
        # 90 s after registering: the silent one was lost, the one heartbeating on the channel not
        assert states[beating] is TaskManagerState.REGISTERED
        assert states.get(silent) is not TaskManagerState.REGISTERED
        assert len(client.app[CHANNELS]) == 1
        with pytest.raises(TimeoutError):
            await websocket.receive(timeout=0.2)  # nothing was said: no answer per heartbeat


async def test_a_slot_report_frame_is_checked_as_the_http_heartbeat_checks_it(
    aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(app_of(engine))
    [name] = registered(engine, 1)
    async with client.ws_connect(channel_path(name), autoping=False) as websocket:
        await websocket.send_str(json.dumps({"slots": [{"slot_id": f"{name}/0", "job_id": "j1"}]}))
        await handled(websocket)  # accepted: still open, nothing said
        await websocket.send_str(json.dumps({"slots": [{"slot_id": f"{name}/7"}]}))
        problem = json.loads((await websocket.receive(timeout=5)).data)
        assert (problem["status"], problem["type"]) == (422, "urn:rmd:problem:invalid-value")
        assert (await websocket.receive(timeout=5)).type is WSMsgType.CLOSE
        assert websocket.close_code == 4422


async def test_an_unknown_taskmanager_gets_the_404_document_and_the_channel_closes(
    aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(app_of(engine))
    registered(engine, 1)
    async with client.ws_connect(channel_path("flink-1-taskmanager-9-9")) as websocket:
        message = await websocket.receive(timeout=5)
        problem = json.loads(message.data)
        assert problem["type"] == "urn:rmd:problem:unknown-taskmanager"
        assert (await websocket.receive(timeout=5)).type is WSMsgType.CLOSE
        assert websocket.close_code == 4404
    assert isinstance(channel_answer(message.data, now_wall=0.0), Unknown)


async def test_a_released_taskmanager_is_told_on_its_next_frame(
    aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(app_of(engine))
    [name] = registered(engine, 1)
    async with client.ws_connect(channel_path(name), autoping=False) as websocket:
        await handled(websocket)
        engine.apply(engine.allocator.remove_job("j1"))
        engine.apply(engine.allocator.deregister(name))  # freed and released: pod deleted
        await websocket.send_str("{}")
        message = await websocket.receive(timeout=5)
    answer = channel_answer(message.data, now_wall=0.0)
    assert isinstance(answer, Unknown), answer


async def test_the_token_is_checked_at_the_upgrade_and_for_every_frame(
    aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(app_of(engine, auth_token=TOKEN))
    [name] = registered(engine, 1)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(channel_path(name), autoping=False)
    assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
        await client.ws_connect(channel_path(name), headers={"Authorization": "Bearer nope"})
    assert wrong.value.status == 401
    async with client.ws_connect(
        channel_path(name), headers={"Authorization": f"Bearer {TOKEN}"}, autoping=False
    ) as websocket:
        await websocket.send_str("{}")
        await handled(websocket)


async def test_a_daemon_that_stops_leading_says_so_with_the_leaders_url(
    aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    leadership = Leading()
    client: TestClient[Any, Any] = await aiohttp_client(app_of(engine, leadership=leadership))
    [name] = registered(engine, 1)
    async with client.ws_connect(channel_path(name), autoping=False) as websocket:
        await handled(websocket)
        leadership.is_leader, leadership.leader_url = False, "http://10.0.0.9:8090"
        await websocket.send_str("{}")
        message = await websocket.receive(timeout=5)
        assert (await websocket.receive(timeout=5)).type is WSMsgType.CLOSE
        assert websocket.close_code == 4503
    answer = channel_answer(message.data, now_wall=0.0)
    assert isinstance(answer, Unavailable)
    assert answer.leader_url == "http://10.0.0.9:8090"


async def test_a_plain_get_is_told_to_upgrade(
    aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(app_of(engine))
    [name] = registered(engine, 1)
    response = await client.get(channel_path(name))
    assert response.status == 400
    assert "WebSocket upgrade" in (await response.json())["detail"]


async def test_a_silent_channel_is_closed_after_the_idle_timeout(engine: InMemoryEngine) -> None:
    [name] = registered(engine, 1)
    app = app_of(engine, idle_timeout=0.3)
    async with served_api(app) as (port, _), aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}{channel_path(name)}"
        async with http.ws_connect(url) as websocket:
            message = await websocket.receive(timeout=5)
            assert (message.type, message.data) == (WSMsgType.CLOSE, 1001), message
        assert len(app[CHANNELS]) == 0


async def test_shutdown_closes_every_channel(engine: InMemoryEngine) -> None:
    [name] = registered(engine, 1)
    app = app_of(engine)
    async with aiohttp.ClientSession() as http:
        async with served_api(app) as (port, _):
            websocket = await http.ws_connect(
                f"http://127.0.0.1:{port}{channel_path(name)}", autoping=False
            )
            await handled(websocket)
        # the runner's cleanup ran: the daemon said it goes away
        message = await websocket.receive(timeout=5)
        # (the code as the frame said it: answering the close may fail, the daemon is gone)
        assert (message.type, message.data) == (WSMsgType.CLOSE, 1001), message


# ------------------------------------------------------------------------------ pure parts


def test_stale_channels_are_those_silent_for_the_idle_timeout() -> None:
    assert stale_channels({"a": 10.0, "b": 40.0, "c": 69.9}, now=70.0, idle_timeout=30.0) == [
        "a",
        "b",
    ]
    clock = ManualClock()
    channels: OpenChannels[str] = OpenChannels(clock=clock)
    channels.seen("a")
    clock.advance(20)
    channels.seen("b")
    clock.advance(15)
    assert channels.stale(30.0) == ["a"]
    channels.forget("a")
    assert (len(channels), channels.stale(30.0)) == (1, [])


def test_frames_and_close_codes_read_as_the_http_answers_they_stand_for() -> None:
    unknown = json.dumps(
        {"type": "urn:rmd:problem:unknown-taskmanager", "status": 404, "detail": "being released"}
    )
    assert channel_answer(unknown, now_wall=0.0) == Unknown("HTTP 404: being released", True)
    token = json.dumps({"type": "urn:rmd:problem:unauthorized", "status": 401, "detail": "x"})
    assert channel_answer(token, now_wall=0.0) == Rejected(401, "HTTP 401: x")
    assert isinstance(channel_answer("not json", now_wall=0.0), Unavailable)
    assert isinstance(channel_answer('{"status": true}', now_wall=0.0), Unavailable)
    assert isinstance(close_answer(4404, now_wall=0.0), Unknown)
    assert isinstance(close_answer(4401, now_wall=0.0), Rejected)
    for code in (1000, 1001, 1006, None):
        gone = close_answer(code, now_wall=0.0)
        assert isinstance(gone, Unavailable)
        assert gone.unreachable
    assert not isinstance(close_answer(4200, now_wall=0.0), Accepted | Unknown | Rejected)


# ------------------------------------------------------------------------------ agent ⇄ daemon

FAST = AgentTiming(
    request_timeout=1.0,
    deregister_timeout=1.0,
    grace_period=5.0,
    backoff=Backoff(base=0.02, cap=0.1, floor=0.01),
)


def agent_env_for(port: int, name: str) -> dict[str, str]:
    return {
        agent_env.POD_NAME: name,
        agent_env.POD_IP: "10.0.0.7",
        agent_env.RESOURCEMANAGER_URL: f"http://127.0.0.1:{port}",
        agent_env.TASKMANAGER_SLOTS: "1",
        agent_env.TASKMANAGER_PORT: "6122",
        agent_env.HEARTBEAT_INTERVAL: "0.05",
    }


async def heartbeats_seen(
    app: web.Application, engine: InMemoryEngine, clock: ManualClock, name: str
) -> bool:
    """A frame came after the allocator's clock moved to just before the heartbeat timeout:
    the TaskManager is still registered a moment after the timeout."""
    clock.advance(HEARTBEAT_TIMEOUT - 1)
    [before] = app[CHANNELS].last_frame.values()
    await eventually_true(
        lambda: list(app[CHANNELS].last_frame.values()) != [before], what="the next frame"
    )
    clock.advance(2)
    engine.apply(engine.allocator.tick())
    return engine.allocator.taskmanager_view(name).state is TaskManagerState.REGISTERED


@pytest.fixture
async def agent_on(engine: InMemoryEngine) -> AsyncIterator[tuple[web.Application, str, Any]]:
    engine.apply(engine.allocator.declare("j1", 1))
    [name] = engine.start_requested_pods()
    app = app_of(engine)
    stop = asyncio.Event()
    async with served_api(app) as (port, _):
        agent = asyncio.create_task(
            run_agent(env=agent_env_for(port, name), command=None, stop=stop, timing=FAST)
        )
        try:
            yield app, name, agent
        finally:
            stop.set()
            assert await within(agent, seconds=10, what="the agent to stop") == 0
            assert len(app[CHANNELS]) == 0


async def test_the_agent_heartbeats_over_the_channel_not_over_http(
    agent_on: tuple[web.Application, str, Any], engine: InMemoryEngine, clock: ManualClock
) -> None:
    app, name, _ = agent_on
    await eventually_true(lambda: len(app[CHANNELS]) == 1, what="the agent's channel")
    for _ in range(2):  # its frames keep it registered over heartbeat timeouts
        assert await heartbeats_seen(app, engine, clock, name)


async def test_the_agent_stops_when_the_channel_says_it_is_released(
    agent_on: tuple[web.Application, str, Any], engine: InMemoryEngine
) -> None:
    app, name, agent = agent_on
    await eventually_true(lambda: len(app[CHANNELS]) == 1, what="the agent's channel")
    engine.apply(engine.allocator.remove_job("j1"))
    engine.apply(engine.allocator.deregister(name))  # released: its pod is deleted
    assert await within(agent, seconds=10, what="the agent to end") == 0
    assert len(app[CHANNELS]) == 0


async def test_a_daemon_that_reads_nothing_ends_the_channel_at_the_first_unanswered_ping() -> None:
    """A daemon process that stands still: its kernel takes the frames, nobody pongs."""
    stuck = asyncio.Event()

    async def never_reads(request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse(autoping=False)
        await websocket.prepare(request)
        await stuck.wait()
        return websocket

    app = web.Application()
    app.router.add_get("/v1/taskmanagers/{id}/heartbeat-channel", never_reads)
    async with served_api(app) as (port, _), aiohttp.ClientSession() as http:
        opened = await open_channel(
            http,
            base_url=f"http://127.0.0.1:{port}",
            taskmanager_id="flink-1-taskmanager-1-1",
            headers={},
            timeout=0.3,
            clock=ManualClock(),
            ping_every=2,
        )
        assert isinstance(opened, HeartbeatChannel)
        await opened.beat()
        assert not opened.news.done()  # no ping yet: nothing to miss
        await opened.beat()  # with a ping
        answer = await within(opened.news, seconds=5, what="the missing pong noticed")
        assert isinstance(answer, Unavailable)
        assert "no pong" in answer.error
        stuck.set()
        await opened.close()


async def test_an_upgrade_answered_404_means_no_channel(engine: InMemoryEngine) -> None:
    app = web.Application()  # a daemon without the route
    async with served_api(app) as (port, _), aiohttp.ClientSession() as http:
        opened = await open_channel(
            http,
            base_url=f"http://127.0.0.1:{port}",
            taskmanager_id="flink-1-taskmanager-1-1",
            headers={},
            timeout=1.0,
            clock=ManualClock(),
            ping_every=3,
        )
    assert isinstance(opened, ChannelUnsupported)
    assert opened.status == 404
