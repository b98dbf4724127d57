"""With high availability: a standby daemon's /v1 answers 503 with the leader's address, and
the JobMaster client and the TaskManager agent follow it (the real apps, real clients)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from rmd.agent.client import Accepted, ResourceManagerClient, Unavailable
from rmd.api.app import create_app
from rmd.client import NotReady, RmdClient
from rmd.core.clock import ManualClock
from rmd.status_cli import fetch_once
from tests.unit.api_fake_engine import InMemoryEngine, make_engine, make_metrics

ServerFactory = Any  # pytest-aiohttp's aiohttp_server fixture


@dataclass
class FakeLeadership:
    """What the Lease election tells the API (rmd.api.ports.Leadership)."""

    is_leader: bool
    leader_url: str | None


def app_for(engine: InMemoryEngine, leadership: FakeLeadership) -> web.Application:
    return create_app(
        engine=engine,
        metrics=make_metrics(engine),
        refuse_v1_until_ready=True,
        leadership=leadership,
    )


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def daemons(
    aiohttp_server: ServerFactory,
) -> tuple[TestServer, InMemoryEngine, TestServer, InMemoryEngine, FakeLeadership]:
    """A leader and a standby that points at it."""
    leader_engine = make_engine(slots_per_taskmanager=2)
    leader = await aiohttp_server(app_for(leader_engine, FakeLeadership(True, None)))
    standby_engine = make_engine(slots_per_taskmanager=2)
    standby_says = FakeLeadership(False, url_of(leader))
    standby = await aiohttp_server(app_for(standby_engine, standby_says))
    return leader, leader_engine, standby, standby_engine, standby_says


async def test_a_standby_answers_v1_with_503_and_the_leaders_address(
    aiohttp_server: ServerFactory,
) -> None:
    leader, _, standby, standby_engine, says = await daemons(aiohttp_server)
    async with aiohttp.ClientSession() as http:
        for method, path in (("PUT", "/v1/jobs/j/requirements"), ("GET", "/v1/jobs")):
            async with http.request(method, url_of(standby) + path, json={"slots": 1}) as resp:
                body = await resp.json(content_type=None)
                assert resp.status == 503
                assert resp.headers["Content-Type"].startswith("application/problem+json")
                assert resp.headers["Retry-After"] == "1"
            assert body["type"] == "urn:rmd:problem:not-leader"
            assert body["leader_url"] == url_of(leader)
            assert url_of(leader) in body["detail"]
        assert standby_engine.applied == []  # nothing reached the standby's allocator
        # Ready (a warm standby; a rolling update waits for readiness), and says who leads.
        async with http.get(url_of(standby) + "/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["leader"] == {
                "is_leader": False,
                "leader_url": url_of(leader),
            }
        says.leader_url = None  # an election under way: no address to give
        async with http.get(url_of(standby) + "/v1/jobs") as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 503
            assert "leader_url" not in body
            assert "no leader is known yet" in body["detail"]


async def test_the_jobmaster_client_follows_the_leader_and_back_to_the_service(
    aiohttp_server: ServerFactory,
) -> None:
    leader, leader_engine, standby, standby_engine, says = await daemons(aiohttp_server)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with RmdClient(url_of(standby), sleep=sleep, rng=random.Random(1)) as rmd:
        view = await rmd.declare("job-1", 4)
        assert view.slots_required == 4
        assert rmd.target_url == url_of(leader)
        assert leader_engine.allocator.job_view("job-1").slots_required == 4
        assert standby_engine.applied == []
        assert waits == []  # followed at once, no Retry-After wait
        # The leader dies; the standby takes over: the client finds it through base_url.
        await leader.close()
        says.is_leader, says.leader_url = True, None
        assert (await rmd.declare("job-1", 2)).slots_required == 2
        assert rmd.target_url == url_of(standby)
        assert standby_engine.allocator.job_view("job-1").slots_required == 2


async def test_a_standby_naming_no_leader_is_retried_and_then_raises(
    aiohttp_server: ServerFactory,
) -> None:
    standby_engine = make_engine(slots_per_taskmanager=2)
    standby = await aiohttp_server(app_for(standby_engine, FakeLeadership(False, None)))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with RmdClient(url_of(standby), sleep=sleep, max_attempts=3) as rmd:
        with pytest.raises(NotReady) as caught:
            await rmd.jobs()
    assert caught.value.type == "urn:rmd:problem:not-leader"
    assert caught.value.leader_url is None
    assert len(waits) == 2  # Retry-After honoured between the attempts


async def test_the_agent_registers_with_the_leader_a_standby_names(
    aiohttp_server: ServerFactory,
) -> None:
    leader, leader_engine, standby, _, says = await daemons(aiohttp_server)
    leader_engine.apply(leader_engine.allocator.declare("job", 2))
    (pod,) = leader_engine.start_requested_pods()
    async with aiohttp.ClientSession() as session:
        agent = ResourceManagerClient(
            session=session,
            base_url=url_of(standby),
            auth_token=None,
            request_timeout=5.0,
            clock=ManualClock(),
        )
        answer = await agent.register(pod, address="10.0.0.1:6122", slots=2)
        assert isinstance(answer, Accepted)
        assert answer.state == "registered"
        assert agent.target_url == url_of(leader)
        assert isinstance(await agent.heartbeat(pod), Accepted)
        # The leader goes away: the call fails, and the next one asks the Service again.
        await leader.close()
        says.leader_url = None
        gone = await agent.heartbeat(pod)
        assert isinstance(gone, Unavailable)
        assert gone.unreachable
        assert agent.target_url == url_of(standby)
        waiting = await agent.heartbeat(pod)
        assert isinstance(waiting, Unavailable)
        assert not waiting.unreachable
        assert waiting.retry_after == 1.0


async def test_rmd_status_asks_the_leader_a_standby_names(aiohttp_server: ServerFactory) -> None:
    _, leader_engine, standby, _, _ = await daemons(aiohttp_server)
    leader_engine.apply(leader_engine.allocator.declare("job-on-the-leader", 2))
    snapshot = await fetch_once(url_of(standby), token=None, timeout=5.0)
    assert [job["job_id"] for job in snapshot.jobs] == ["job-on-the-leader"]
