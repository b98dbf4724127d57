"""The TaskManager agent against a daemon that speaks API.md's TaskManager side over real HTTP.

``FakeDaemon`` stands in for the real daemon app (someone else's, not available here): it
answers exactly as API.md says — 200 + TaskManagerView, 404 for a TaskManager it does not know,
403 problem+json for ids it did not create or is releasing, 204 on DELETE, 401 without the
bearer token — and can be put into an outage (503, 429 with Retry-After, no answer at all).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from structlog.testing import LogCapture

from rmd.agent import AgentTiming, run_agent
from rmd.agent.exit_codes import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_REJECTED, EXIT_USAGE
from rmd.config import agent_env
from rmd.core.clock import ManualClock
from rmd.retry import Backoff
from tests.support.waiting import eventually_true, within

TM_ID = "flink-1-taskmanager-1-1"
DEADLINE = 10.0  # seconds any awaited condition may take before the test fails
FAST = AgentTiming(
    request_timeout=1.0,
    deregister_timeout=1.0,
    grace_period=5.0,
    backoff=Backoff(base=0.02, cap=0.1, floor=0.01),
)

# ------------------------------------------------------------------------------ the fake daemon


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any
    authorization: str | None
    at: float  # time.monotonic() when the daemon received it


@dataclass
class FakeDaemon:
    """The TaskManager side of API.md, in memory."""

    created: set[str] = field(default_factory=lambda: {TM_ID})  # pods "this daemon created"
    token: str | None = None
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)
    releasing: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    outage_status: int | None = None  # answer every /v1 call with this (503, 429, ...)
    retry_after: str | None = None  # Retry-After sent with the outage status
    hang: asyncio.Event | None = None  # while set to an unset Event: answer nothing
    # How a heartbeat of a TaskManager being released is answered: 200 with its view in state
    # "releasing", or (as rmd's allocator does) 404 with a detail saying it is being released.
    releasing_heartbeat: Literal["view", "404"] = "view"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/taskmanagers", self._register)
        app.router.add_put("/v1/taskmanagers/{id}/heartbeat", self._heartbeat)
        app.router.add_delete("/v1/taskmanagers/{id}", self._deregister)
        app.router.add_get("/v1/taskmanagers", self._list)
        return app

    # --- what tests do to it
    def forget(self, taskmanager_id: str) -> None:
        """As after a daemon restart that lost the TaskManager: heartbeats get 404."""
        del self.registered[taskmanager_id]

    def release(self, taskmanager_id: str) -> None:
        """The daemon decided to delete the pod (idle timeout, scale-down)."""
        self.releasing.add(taskmanager_id)
        if taskmanager_id in self.registered:
            self.registered[taskmanager_id]["state"] = "releasing"

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # --- handlers
    async def _answer_problem_first(self, request: web.Request) -> web.Response | None:
        body: Any = None
        if request.can_read_body:
            text = await request.text()
            body = json.loads(text) if text else None
        self.calls.append(
            Call(
                request.method,
                request.path,
                body,
                request.headers.get("Authorization"),
                time.monotonic(),
            )
        )
        if self.hang is not None:
            await self.hang.wait()
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            response = _problem(401, "Unauthorized", "Send 'Authorization: Bearer <token>'.")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if self.outage_status is not None:
            response = _problem(self.outage_status, "Unavailable", "Try again later.")
            if self.retry_after is not None:
                response.headers["Retry-After"] = self.retry_after
            return response
        return None

    async def _register(self, request: web.Request) -> web.Response:
        problem = await self._answer_problem_first(request)
        if problem is not None:
            return problem
        body = self.calls[-1].body
        if not isinstance(body, dict):
            return _problem(400, "Bad Request", "The body must be a JSON object.")
        taskmanager_id, address, slots = (
            body.get(k) for k in ("taskmanager_id", "address", "slots")
        )
        if not (isinstance(taskmanager_id, str) and isinstance(address, str)):
            return _problem(422, "Unprocessable", "Give taskmanager_id and address as strings.")
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            return _problem(422, "Unprocessable", "Give slots as a whole number ≥ 1.")
        if taskmanager_id not in self.created:
            return _problem(
                403,
                "Forbidden",
                f"TaskManager {taskmanager_id} was not created by this daemon; "
                "only pods it created may register.",
            )
        if taskmanager_id in self.releasing:
            return _problem(
                403,
                "Forbidden",
                f"TaskManager {taskmanager_id} is being released; it may not register again.",
            )
        view = _view(taskmanager_id, address=address, slots=slots, state="registered")
        self.registered[taskmanager_id] = view
        return web.json_response(view)

    async def _heartbeat(self, request: web.Request) -> web.Response:
        problem = await self._answer_problem_first(request)
        if problem is not None:
            return problem
        taskmanager_id = request.match_info["id"]
        view = self.registered.get(taskmanager_id)
        if (
            view is not None
            and taskmanager_id in self.releasing
            and (self.releasing_heartbeat == "404")
        ):
            return _problem(
                404,
                "Not Found",
                f"TaskManager {taskmanager_id!r} is being released; it is no longer served",
            )
        if view is None:
            return _problem(
                404,
                "Not Found",
                f"TaskManager {request.match_info['id']} is unknown to this daemon; register it.",
            )
        return web.json_response(view)

    async def _deregister(self, request: web.Request) -> web.Response:
        problem = await self._answer_problem_first(request)
        if problem is not None:
            return problem
        taskmanager_id = request.match_info["id"]
        if taskmanager_id not in self.registered:
            return _problem(404, "Not Found", f"TaskManager {taskmanager_id} is unknown.")
        self.release(taskmanager_id)
        return web.Response(status=204)

    async def _list(self, request: web.Request) -> web.Response:
        problem = await self._answer_problem_first(request)
        return problem or web.json_response({"taskmanagers": list(self.registered.values())})


def _view(taskmanager_id: str, *, address: str, slots: int, state: str) -> dict[str, Any]:
    return {
        "taskmanager_id": taskmanager_id,
        "state": state,
        "slots_total": slots,
        "slots_allocated": 0,
        "address": address,
        "slots": [
            {"slot_id": f"{taskmanager_id}/{index}", "job_id": None} for index in range(slots)
        ],
        "idle_since": "2026-01-01T00:00:00Z",
    }


def _problem(status: int, title: str, detail: str) -> web.Response:
    return web.json_response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status=status,
        content_type="application/problem+json",
    )


# ------------------------------------------------------------------------------ helpers


async def eventually(
    predicate: Callable[[], bool], *, what: str, timeout: float = DEADLINE
) -> None:
    """Wait until ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    await eventually_true(predicate, what=what, timeout=timeout, interval=0.005)


def make_env(
    url: str, *, taskmanager_id: str = TM_ID, interval: str = "0.05", **extra: str
) -> dict[str, str]:
    return {
        agent_env.POD_NAME: taskmanager_id,
        agent_env.POD_IP: "127.0.0.1",
        agent_env.RESOURCEMANAGER_URL: url,
        agent_env.TASKMANAGER_SLOTS: "4",
        agent_env.TASKMANAGER_PORT: "6122",
        agent_env.HEARTBEAT_INTERVAL: interval,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **extra,
    }


class RecordingSleep:
    """A sleep that records what it was asked for and advances a ManualClock by it.

    It yields only briefly (real time), so back-off sequences run in milliseconds.
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(max(seconds, 0.0))
        await asyncio.sleep(0.002)


@dataclass
class RunningAgent:
    task: asyncio.Task[int]
    stop: asyncio.Event
    logs: LogCapture

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        return [entry for entry in self.logs.entries if entry["event"] == name]

    async def result(self, timeout: float = DEADLINE) -> int:
        return await within(asyncio.shield(self.task), seconds=timeout, what="the agent to end")


class AgentStarter:
    """Starts agents as tasks; stops and awaits any still running at the end of a test."""

    def __init__(self) -> None:
        self.running: list[RunningAgent] = []

    def __call__(
        self,
        env: Mapping[str, str],
        command: Sequence[str] | None = None,
        *,
        timing: AgentTiming = FAST,
        **options: Any,
    ) -> RunningAgent:
        logs = LogCapture()
        log = structlog.wrap_logger(
            None,
            processors=[logs],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_agent(env=env, command=command, stop=stop, log=log, timing=timing, **options)
        )
        agent = RunningAgent(task=task, stop=stop, logs=logs)
        self.running.append(agent)
        return agent

    async def close(self) -> None:
        for agent in self.running:
            agent.stop.set()
        tasks = [agent.task for agent in self.running]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=DEADLINE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def start_agent() -> AsyncIterator[AgentStarter]:
    starter = AgentStarter()
    yield starter
    await starter.close()


@pytest.fixture
async def daemon(aiohttp_server: Callable[..., Any]) -> AsyncIterator[tuple[FakeDaemon, str]]:
    fake = FakeDaemon()
    server: TestServer = await aiohttp_server(fake.app())
    yield fake, str(server.make_url("")).rstrip("/")
    if fake.hang is not None:
        fake.hang.set()


def python_command(source: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(source)]


def exits_0_on_sigterm(*, marker: Path, ready: Path) -> list[str]:
    """A command that writes ``ready`` once it handles SIGTERM, and on SIGTERM writes
    "got SIGTERM" to ``marker`` and exits 0."""
    return python_command(
        f"""
        import pathlib, signal, sys, time
        def on_term(signum, frame):
            pathlib.Path({str(marker)!r}).write_text("got SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        pathlib.Path({str(ready)!r}).write_text("ready")
        time.sleep(60)
        """
    )


# ------------------------------------------------------------------------------ tests


async def test_registers_then_heartbeats_at_the_interval_and_deregisters_on_stop(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    fake.token = "s3cret"
    agent = start_agent(make_env(url, **{agent_env.AUTH_TOKEN: "s3cret"}))

    await eventually(lambda: len(fake.calls_of("PUT")) >= 3, what="three heartbeats")
    agent.stop.set()

    assert await agent.result() == 0
    first = fake.calls[0]
    assert (first.method, first.path) == ("POST", "/v1/taskmanagers")
    assert first.body == {"taskmanager_id": TM_ID, "address": "127.0.0.1:6122", "slots": 4}
    heartbeats = fake.calls_of("PUT")
    assert all(call.path == f"/v1/taskmanagers/{TM_ID}/heartbeat" for call in heartbeats)
    assert all(call.body == {} for call in heartbeats)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(heartbeats)]
    assert min(gaps) >= 0.045, f"heartbeats closer than the 0.05 s interval: {gaps}"
    assert all(call.authorization == "Bearer s3cret" for call in fake.calls)
    assert (fake.calls[-1].method, fake.calls[-1].path) == ("DELETE", f"/v1/taskmanagers/{TM_ID}")
    assert len(agent.events("agent.registered")) == 1
    assert agent.events("agent.deregistered") == [
        {"event": "agent.deregistered", "known": True, "taskmanager_id": TM_ID, "log_level": "info"}
    ]


async def test_registers_again_when_the_daemon_forgot_it(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    agent = start_agent(make_env(url))
    await eventually(lambda: len(fake.calls_of("PUT")) >= 1, what="the first heartbeat")

    fake.forget(TM_ID)
    await eventually(lambda: len(fake.calls_of("POST")) >= 2, what="a second registration")
    heartbeats_after = len(fake.calls_of("PUT"))
    await eventually(lambda: len(fake.calls_of("PUT")) > heartbeats_after, what="heartbeats again")

    assert not agent.task.done()
    assert TM_ID in fake.registered
    [forgotten] = agent.events("agent.unknown_to_daemon")
    assert "unknown to this daemon" in forgotten["detail"]
    assert len(agent.events("agent.registered")) == 2


@pytest.mark.parametrize("answer", ["view", "404"])
async def test_exits_0_and_stops_the_command_when_the_daemon_releases_it(
    daemon: tuple[FakeDaemon, str],
    start_agent: AgentStarter,
    tmp_path: Path,
    answer: Literal["view", "404"],
) -> None:
    fake, url = daemon
    fake.releasing_heartbeat = answer
    marker = tmp_path / "sigterm"
    ready = tmp_path / "ready"
    command = exits_0_on_sigterm(marker=marker, ready=ready)
    agent = start_agent(make_env(url), command)
    await eventually(lambda: ready.exists() and bool(fake.calls_of("PUT")), what="a heartbeat")

    fake.release(TM_ID)

    assert await agent.result() == 0
    assert marker.read_text() == "got SIGTERM"
    assert agent.events("agent.released")[0]["answer_to"] == "heartbeat"
    assert not fake.calls_of("DELETE"), "a released TaskManager has nothing to deregister"
    assert len(fake.calls_of("POST")) == 1, "being released is no reason to register again"
    assert not agent.events("agent.unknown_to_daemon")


async def test_supervised_command_exit_code_is_propagated_and_deregistered(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter, tmp_path: Path
) -> None:
    fake, url = daemon
    go = tmp_path / "go"
    seen = tmp_path / "seen-pod-name"
    command = python_command(
        f"""
        import os, pathlib, sys, time
        pathlib.Path({str(seen)!r}).write_text(os.environ[{agent_env.POD_NAME!r}])
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.01)
        sys.exit(7)
        """
    )
    agent = start_agent(make_env(url), command)
    await eventually(lambda: bool(fake.calls_of("PUT")), what="a heartbeat")
    calls_before = len(fake.calls)

    go.write_text("exit now")

    assert await agent.result() == 7
    assert seen.read_text() == TM_ID
    assert fake.calls_of("POST")[0].at < fake.calls_of("PUT")[0].at
    assert [(c.method, c.path) for c in fake.calls[calls_before:]][-1] == (
        "DELETE",
        f"/v1/taskmanagers/{TM_ID}",
    )
    assert agent.events("agent.command_exited")[0]["returncode"] == 7


async def test_registers_only_after_the_command_started(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon

    agent = start_agent(make_env(url), ["/nonexistent/taskmanager.sh", "start"])

    assert await agent.result() == EXIT_NOT_FOUND
    assert fake.calls == []
    assert "nonexistent" in agent.events("agent.command_not_started")[0]["error"]


async def test_stop_forwards_sigterm_to_the_command_and_deregisters(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter, tmp_path: Path
) -> None:
    fake, url = daemon
    marker = tmp_path / "sigterm"
    ready = tmp_path / "ready"
    command = exits_0_on_sigterm(marker=marker, ready=ready)
    agent = start_agent(make_env(url), command)
    await eventually(lambda: ready.exists() and bool(fake.calls_of("PUT")), what="a heartbeat")

    agent.stop.set()

    assert await agent.result() == 0
    assert marker.read_text() == "got SIGTERM"
    assert fake.calls[-1].method == "DELETE"
    assert agent.events("agent.command_stopped")[0]["returncode"] == 0


async def test_a_command_ignoring_sigterm_is_killed_after_the_grace_period(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter, tmp_path: Path
) -> None:
    fake, url = daemon
    ready = tmp_path / "ready"
    command = python_command(
        f"""
        import pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(ready)!r}).write_text("ready")
        time.sleep(60)
        """
    )
    timing = AgentTiming(
        request_timeout=1.0, deregister_timeout=1.0, grace_period=0.3, backoff=FAST.backoff
    )
    agent = start_agent(make_env(url), command, timing=timing)
    await eventually(lambda: ready.exists() and bool(fake.calls_of("PUT")), what="a heartbeat")
    stop_requested_at = time.monotonic()

    agent.stop.set()

    assert await agent.result() == 128 + signal.SIGKILL
    assert time.monotonic() - stop_requested_at >= 0.3
    assert agent.events("agent.command_killed")[0]["returncode"] == -signal.SIGKILL
    assert fake.calls[-1].method == "DELETE"


async def test_a_cancelled_agent_leaves_no_command_behind(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    agent = start_agent(make_env(url), python_command("import time; time.sleep(60)"))
    await eventually(lambda: bool(fake.calls_of("PUT")), what="a heartbeat")
    pid = agent.events("agent.command_started")[0]["pid"]

    agent.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await agent.task

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(gone, what=f"the command (pid {pid}) to be killed and reaped")


async def test_retries_with_backoff_while_the_daemon_is_down_then_registers(
    aiohttp_server: Callable[..., Any], start_agent: AgentStarter
) -> None:
    port = unused_port()
    fake = FakeDaemon()
    clock = ManualClock()
    sleep = RecordingSleep(clock)
    policy = Backoff(base=0.5, cap=4.0, floor=0.05)
    timing = AgentTiming(request_timeout=1.0, deregister_timeout=1.0, backoff=policy)
    agent = start_agent(
        make_env(f"http://127.0.0.1:{port}"),
        timing=timing,
        clock=clock,
        sleep=sleep,
        uniform=lambda: 0.75,
    )
    await eventually(
        lambda: len(agent.events("agent.register_failed")) >= 6, what="six refused connections"
    )

    await aiohttp_server(fake.app(), port=port)  # the daemon comes up
    await eventually(lambda: TM_ID in fake.registered, what="the registration")

    failures = agent.events("agent.register_failed")
    assert [entry["attempt"] for entry in failures[:6]] == [1, 2, 3, 4, 5, 6]
    assert [entry["delay"] for entry in failures[:6]] == [0.375, 0.75, 1.5, 3.0, 3.0, 3.0]
    assert sleep.delays[:6] == [0.375, 0.75, 1.5, 3.0, 3.0, 3.0]
    assert all("Cannot connect" in entry["error"] for entry in failures)
    assert all(entry["log_level"] == "warning" for entry in failures)
    assert not agent.task.done()


async def test_full_jitter_spreads_delays_below_the_exponential_ceiling(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    fake.outage_status = 503
    sleep = RecordingSleep(ManualClock())
    picks = iter([0.9, 0.1, 0.5, 0.0, 0.99] * 100)
    policy = Backoff(base=1.0, cap=8.0, floor=0.05)
    agent = start_agent(
        make_env(url),
        timing=AgentTiming(request_timeout=1.0, backoff=policy),
        sleep=sleep,
        uniform=lambda: next(picks),
    )
    await eventually(lambda: len(sleep.delays) >= 5, what="five retries")
    fake.outage_status = None
    await eventually(lambda: TM_ID in fake.registered, what="the registration after the outage")

    assert sleep.delays[:5] == pytest.approx([0.9, 0.2, 2.0, 0.05, 7.92])
    assert agent.events("agent.register_failed")[0]["error"] == "HTTP 503: Try again later."


async def test_429_honours_retry_after(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    fake.outage_status = 429
    fake.retry_after = "7"
    sleep = RecordingSleep(ManualClock())
    agent = start_agent(make_env(url), sleep=sleep)
    await eventually(lambda: len(sleep.delays) >= 2, what="two retries")
    fake.outage_status = None
    await eventually(lambda: TM_ID in fake.registered, what="the registration")

    assert sleep.delays[:2] == [7.0, 7.0]
    assert agent.events("agent.register_failed")[0]["retry_after"] == 7.0


async def test_heartbeat_failures_are_retried_and_the_agent_carries_on(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    agent = start_agent(make_env(url))
    await eventually(lambda: bool(fake.calls_of("PUT")), what="a heartbeat")

    fake.outage_status = 502
    await eventually(
        lambda: len(agent.events("agent.heartbeat_failed")) >= 3, what="failed heartbeats"
    )
    fake.outage_status = None
    answered = len(fake.calls)
    await eventually(
        lambda: any(c.method == "PUT" for c in fake.calls[answered:]), what="a heartbeat again"
    )

    attempts = [entry["attempt"] for entry in agent.events("agent.heartbeat_failed")[:3]]
    assert attempts == [1, 2, 3]
    assert not agent.task.done()
    assert len(agent.events("agent.registered")) == 1, "an outage is not a reason to re-register"


async def test_a_hanging_daemon_times_out_and_is_retried(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    fake.hang = asyncio.Event()
    timing = AgentTiming(request_timeout=0.2, deregister_timeout=0.2, backoff=FAST.backoff)
    agent = start_agent(make_env(url), timing=timing)
    await eventually(lambda: len(agent.events("agent.register_failed")) >= 2, what="two timeouts")

    fake.hang.set()
    await eventually(lambda: TM_ID in fake.registered, what="the registration")

    assert "no answer within 0.2 s" in agent.events("agent.register_failed")[0]["error"]


async def test_stop_interrupts_a_long_backoff(start_agent: AgentStarter) -> None:
    agent = start_agent(
        make_env(f"http://127.0.0.1:{unused_port()}"),
        timing=AgentTiming(request_timeout=1.0, deregister_timeout=0.5),  # back-off up to 30 s
        uniform=lambda: 0.999,
    )
    await eventually(lambda: len(agent.events("agent.register_failed")) >= 2, what="failures")
    stop_requested_at = time.monotonic()

    agent.stop.set()

    assert await agent.result(timeout=3.0) == 0
    assert time.monotonic() - stop_requested_at < 2.0
    assert agent.events("agent.deregister_failed"), "the goodbye is tried even so"


async def test_refused_by_a_daemon_that_did_not_create_it_exits_without_looping(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    agent = start_agent(make_env(url, taskmanager_id="someone-elses-pod"))

    assert await agent.result() == EXIT_REFUSED
    assert len(fake.calls) == 1
    [refused] = agent.events("agent.refused")
    assert "was not created by this daemon" in refused["detail"]
    assert refused["log_level"] == "error"


async def test_refused_because_it_is_being_released_exits_0(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    fake.release(TM_ID)
    agent = start_agent(make_env(url))

    assert await agent.result() == 0
    assert len(fake.calls) == 1
    assert agent.events("agent.refused")[0]["released"] is True


async def test_a_wrong_token_is_rejected_once_not_retried(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    fake.token = "right"
    agent = start_agent(make_env(url, **{agent_env.AUTH_TOKEN: "wrong"}))

    assert await agent.result() == EXIT_REJECTED
    assert len(fake.calls) == 1
    assert agent.events("agent.rejected")[0]["status"] == 401


async def test_missing_environment_variable_is_named_and_exits_2(start_agent: AgentStarter) -> None:
    env = make_env("http://127.0.0.1:1")
    del env[agent_env.TASKMANAGER_SLOTS]
    agent = start_agent(env)

    assert await agent.result() == EXIT_USAGE
    [entry] = agent.logs.entries
    assert entry["event"] == "agent.environment_invalid"
    assert agent_env.TASKMANAGER_SLOTS in entry["error"]


async def test_many_agents_share_one_process(
    daemon: tuple[FakeDaemon, str], start_agent: AgentStarter
) -> None:
    fake, url = daemon
    names = [f"flink-1-taskmanager-1-{index}" for index in range(1, 31)]
    fake.created.update(names)
    agents = [start_agent(make_env(url, taskmanager_id=name, interval="0.5")) for name in names]

    await eventually(lambda: set(fake.registered) == set(names), what="all registrations")
    for agent in agents:
        agent.stop.set()
    codes = await asyncio.gather(*(agent.result() for agent in agents))

    assert codes == [0] * len(names)
    assert {c.path for c in fake.calls_of("DELETE")} == {f"/v1/taskmanagers/{n}" for n in names}


# ------------------------------------------------------------------------------ as a process


async def test_the_command_line_agent_stops_on_sigterm(
    daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    fake, url = daemon
    marker = tmp_path / "sigterm"
    ready = tmp_path / "ready"
    child = exits_0_on_sigterm(marker=marker, ready=ready)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rmd.agent",
        "--grace-period",
        "5",
        "--",
        *child,
        env={**os.environ, **make_env(url)},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(lambda: ready.exists() and bool(fake.calls_of("PUT")), what="a heartbeat")
        process.send_signal(signal.SIGTERM)
        _, stderr = await within(process.communicate(), seconds=DEADLINE, what="the agent process")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0
    assert marker.read_text() == "got SIGTERM"
    assert fake.calls[-1].method == "DELETE"
    lines = [json.loads(line) for line in stderr.decode().splitlines()]
    events = [line["event"] for line in lines]
    assert events[:3] == ["agent.starting", "agent.command_started", "agent.registered"]
    assert "agent.stopping" in events
    assert events[-1] == "agent.deregistered"
    assert all(line["taskmanager_id"] == TM_ID and "timestamp" in line for line in lines)
