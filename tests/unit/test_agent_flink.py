"""The agent supervising Flink's TaskManager registers with rmd only once Flink's JobManager
lists the TaskManager (``GET /taskmanagers/<resource-id>`` → 200), asks the JobManager only
rarely until the TaskManager's RPC port is open, and restarts a TaskManager an answering
JobManager has forgotten (a JobManager restarted without high availability)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from rmd.agent.exit_codes import EXIT_USAGE
from rmd.agent.flink import FlinkTaskManagerProbe, taskmanager_log_file
from rmd.config import agent_env
from tests.support.fake_flink import golden
from tests.support.waiting import eventually_true
from tests.unit.test_agent_runner import (
    FAST,
    TM_ID,
    AgentStarter,
    FakeDaemon,
    make_env,
    python_command,
)

# The RPC port is not opened by these tests' commands (but in the test of that gate): the
# JobManager is asked every 0.02 s regardless.
TIMING = dataclasses.replace(
    FAST, flink_poll_interval=0.02, flink_port_poll_interval=0.02, flink_unopened_poll=0.02
)


@dataclasses.dataclass
class FakeJobManager:
    """Flink's REST ``/taskmanagers/<id>``: 404 until the TaskManager is known."""

    known: set[str] = dataclasses.field(default_factory=set)
    asked: list[str] = dataclasses.field(default_factory=list)
    asked_at: list[float] = dataclasses.field(default_factory=list)  # time.monotonic()
    unknown_status: int = 500  # Flink 2.3's answer; 503: a JobManager that cannot say

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/taskmanagers/{id}", self._taskmanager)
        return app

    async def _taskmanager(self, request: web.Request) -> web.Response:
        taskmanager_id = request.match_info["id"]
        self.asked.append(taskmanager_id)
        self.asked_at.append(time.monotonic())
        if taskmanager_id in self.known:
            return web.json_response({"id": taskmanager_id, "slotsNumber": 4})
        if self.unknown_status == 500:  # what Flink 2.3 answers for an unknown id
            return web.json_response(golden("taskmanager-unknown-500"), status=500)
        return web.json_response(
            {"errors": ["Could not find TaskExecutor"]}, status=self.unknown_status
        )


@pytest.fixture
async def start_agent() -> AsyncIterator[AgentStarter]:
    starter = AgentStarter()
    yield starter
    await starter.close()


@pytest.fixture
async def daemon(aiohttp_server: Callable[..., Any]) -> tuple[FakeDaemon, str]:
    fake = FakeDaemon()
    server: TestServer = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def jobmanager(
    aiohttp_server: Callable[..., Any], tmp_path: Path
) -> tuple[FakeJobManager, Path]:
    """A fake Flink REST endpoint and a FLINK_CONF_DIR whose config.yaml points at it."""
    fake = FakeJobManager()
    server: TestServer = await aiohttp_server(fake.app())
    conf_dir = tmp_path / "flink-conf"
    conf_dir.mkdir()
    (conf_dir / "config.yaml").write_text(
        f"jobmanager.rpc.address: '127.0.0.1'\nrest.port: '{server.port}'\n"
    )
    return fake, conf_dir


async def wait_until(predicate: Callable[[], bool], *, what: str) -> None:
    await eventually_true(predicate, what=what, timeout=10.0, interval=0.005)


def flink_env(url: str, conf_dir: Path) -> dict[str, str]:
    return make_env(
        url, **{agent_env.SUPERVISE_FLINK: "true", agent_env.FLINK_CONF_DIR: str(conf_dir)}
    )


async def test_registers_only_after_flink_lists_the_taskmanager(
    start_agent: AgentStarter,
    daemon: tuple[FakeDaemon, str],
    jobmanager: tuple[FakeJobManager, Path],
) -> None:
    fake, url = daemon
    flink, conf_dir = jobmanager
    agent = start_agent(
        flink_env(url, conf_dir), python_command("import time; time.sleep(60)"), timing=TIMING
    )
    await wait_until(lambda: len(flink.asked) >= 3, what="the agent polls Flink")
    assert set(flink.asked) == {TM_ID}
    assert fake.calls_of("POST") == [], "registered before Flink knew the TaskManager"
    flink.known.add(TM_ID)
    await wait_until(lambda: TM_ID in fake.registered, what="registration after Flink lists it")
    assert agent.events("agent.flink_taskmanager_up")
    agent.stop.set()
    assert await agent.result() == 0


GATED = dataclasses.replace(
    FAST, flink_poll_interval=0.02, flink_port_poll_interval=0.02, flink_unopened_poll=0.3
)


async def test_the_jobmanager_is_asked_rarely_until_the_taskmanager_rpc_port_opens(
    start_agent: AgentStarter,
    daemon: tuple[FakeDaemon, str],
    jobmanager: tuple[FakeJobManager, Path],
) -> None:
    fake, url = daemon
    flink, conf_dir = jobmanager
    with socket.socket() as rpc:  # the TaskManager's RPC port: bound, not listening yet
        rpc.bind(("127.0.0.1", 0))
        port = rpc.getsockname()[1]
        env = flink_env(url, conf_dir) | {agent_env.TASKMANAGER_PORT: str(port)}
        agent = start_agent(env, python_command(SLEEPER), timing=GATED)
        await wait_until(lambda: len(flink.asked) >= 3, what="the agent asks Flink regardless")
        gaps = [b - a for a, b in itertools.pairwise(flink.asked_at)]
        assert min(gaps) >= 0.25, f"asked every {gaps} s before the port opened"
        assert not agent.events("agent.flink_taskmanager_port_open")

        rpc.listen()  # the TaskManager's RPC service is up: now the JobManager is asked closely
        await wait_until(
            lambda: bool(agent.events("agent.flink_taskmanager_port_open")), what="port seen open"
        )
        asked = len(flink.asked)
        await wait_until(lambda: len(flink.asked) >= asked + 5, what="asked every poll interval")
        recent = flink.asked_at[-5:]
        assert recent[-1] - recent[0] < 0.25 * 4, f"still asked rarely: {recent}"
        assert fake.calls_of("POST") == []
        flink.known.add(TM_ID)
        await wait_until(lambda: TM_ID in fake.registered, what="registered once listed")
    agent.stop.set()
    assert await agent.result() == 0


LOGGED = dataclasses.replace(GATED, flink_unopened_poll=30.0, flink_log_grace=30.0)
REGISTERED = (
    "2026-12-02 03:06:15,043 INFO  org.apache.flink.runtime.taskexecutor.TaskExecutor [] - "
    "Successful registration at resource manager pekko.tcp://flink@127.0.0.1:34661/user/rpc/"
    "resourcemanager_* under registration id 1f63.\n"
)


async def test_with_its_log_known_flink_is_asked_once_the_log_says_it_registered(
    start_agent: AgentStarter,
    daemon: tuple[FakeDaemon, str],
    jobmanager: tuple[FakeJobManager, Path],
    tmp_path: Path,
) -> None:
    fake, url = daemon
    flink, conf_dir = jobmanager
    log_file = tmp_path / "taskmanager.log"
    with socket.socket() as rpc:  # the TaskManager's RPC port: open from the start
        rpc.bind(("127.0.0.1", 0))
        rpc.listen()
        env = flink_env(url, conf_dir) | {agent_env.TASKMANAGER_PORT: str(rpc.getsockname()[1])}
        command = [*python_command(SLEEPER), f"-Dlog.file={log_file}"]
        agent = start_agent(env, command, timing=LOGGED)
        await wait_until(
            lambda: bool(agent.events("agent.flink_taskmanager_port_open")), what="port seen open"
        )
        log_file.write_text("INFO - Resolved ResourceManager address, beginning registration\n")
        assert flink.asked == [], "asked while the TaskManager was still registering"
        flink.known.add(TM_ID)
        written = time.monotonic()
        with log_file.open("a") as log:  # the line arrives in two writes
            log.write(REGISTERED[:30])
            log.flush()
            log.write(REGISTERED[30:])
        await wait_until(lambda: TM_ID in fake.registered, what="registered once it logged so")
        assert flink.asked_at[0] >= written, "asked before the log said it registered"
        assert agent.events("agent.flink_taskmanager_registration_logged")
    agent.stop.set()
    assert await agent.result() == 0


async def test_a_log_that_never_says_it_still_gets_the_taskmanager_registered(
    start_agent: AgentStarter,
    daemon: tuple[FakeDaemon, str],
    jobmanager: tuple[FakeJobManager, Path],
    tmp_path: Path,
) -> None:
    fake, url = daemon
    flink, conf_dir = jobmanager
    flink.known.add(TM_ID)
    with socket.socket() as rpc:
        rpc.bind(("127.0.0.1", 0))
        rpc.listen()
        env = flink_env(url, conf_dir) | {agent_env.TASKMANAGER_PORT: str(rpc.getsockname()[1])}
        command = [*python_command(SLEEPER), f"-Dlog.file={tmp_path / 'warn-only.log'}"]
        agent = start_agent(env, command, timing=dataclasses.replace(LOGGED, flink_log_grace=0.4))
        await wait_until(
            lambda: bool(agent.events("agent.flink_taskmanager_port_open")), what="port seen open"
        )
        seen_open = time.monotonic()
        await wait_until(lambda: TM_ID in fake.registered, what="registered after the grace")
        assert flink.asked_at[0] - seen_open >= 0.3, "asked before the grace had passed"
        assert not agent.events("agent.flink_taskmanager_registration_logged")
    agent.stop.set()
    assert await agent.result() == 0


FORGETTING = dataclasses.replace(TIMING, flink_forgotten_after=0.3)
SLEEPER = "import time; time.sleep(60)"
HEARTBEAT = "0.25"  # s; Flink is polled every 0.02 s (TIMING)


@pytest.mark.parametrize("unknown_status", [500, 404])  # Flink 2.3's answer, and a plain 404
async def test_after_the_jobmanager_pod_restarted_a_forgotten_taskmanager_restarts_in_place(
    start_agent: AgentStarter,
    daemon: tuple[FakeDaemon, str],
    jobmanager: tuple[FakeJobManager, Path],
    unknown_status: int,
) -> None:
    """The daemon and Flink's JobManager forgot the TaskManager (their pod restarted): the
    agent registers again, asks Flink closely, and once the (answering) JobManager has not
    listed it for ``flink_forgotten_after`` restarts the TaskManager process; it stays
    registered with rmd (no goodbye) and restarts nothing once Flink lists it again."""
    fake, url = daemon
    flink, conf_dir = jobmanager
    flink.known.add(TM_ID)
    env = flink_env(url, conf_dir) | {agent_env.HEARTBEAT_INTERVAL: HEARTBEAT}
    agent = start_agent(env, python_command(SLEEPER), timing=FORGETTING)
    await wait_until(lambda: TM_ID in fake.registered, what="registered")
    [first] = agent.events("agent.command_started")
    fake.forget(TM_ID)
    flink.unknown_status = unknown_status
    flink.known.clear()
    forgotten_at = time.monotonic()
    await wait_until(
        lambda: len(agent.events("agent.command_started")) == 2, what="the TaskManager restarted"
    )
    # Asked until the answer "unknown", then once more when it decides (each question about
    # an unknown TaskManager is an ERROR in Flink's log), not every poll interval meanwhile.
    restarted_at = time.monotonic()
    unknown_asks = [at for at in flink.asked_at if forgotten_at <= at <= restarted_at]
    assert len(unknown_asks) <= 4, f"asked {len(unknown_asks)} times before restarting"
    assert len(fake.calls_of("POST")) == 2, "registered again after the daemon forgot it"
    [forgot] = agent.events("agent.flink_forgot_taskmanager")
    assert forgot["unknown_for_seconds"] >= 0.3
    second = agent.events("agent.command_started")[1]
    assert second["pid"] != first["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)  # the first one is gone
    # The new TaskManager is still starting (a JVM: seconds): not restarted again meanwhile.
    asked = len(flink.asked)
    await wait_until(lambda: len(flink.asked) >= asked + 40, what="polls over 0.8 s")
    assert len(agent.events("agent.command_started")) == 2, "restarted while still starting"
    flink.known.add(TM_ID)  # the new one registered with the new JobManager
    asked = len(flink.asked)
    await wait_until(lambda: len(flink.asked) >= asked + 30, what="more polls")
    assert len(agent.events("agent.command_started")) == 2
    assert len(fake.calls_of("POST")) == 2
    assert fake.calls_of("DELETE") == []
    agent.stop.set()
    assert await agent.result() == 0


# A TaskManager stand-in that opens its RPC port (RMD_TASKMANAGER_PORT) once a flag file exists.
PORT_OPENER = """
import os, socket, time
while not os.path.exists(os.environ["TEST_RPC_FLAG"]):
    time.sleep(0.01)
rpc = socket.socket()
rpc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
rpc.bind(("127.0.0.1", int(os.environ["RMD_TASKMANAGER_PORT"])))
rpc.listen()
time.sleep(60)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_restarted_taskmanager_is_asked_about_rarely_until_its_port_opens_again(
    start_agent: AgentStarter,
    daemon: tuple[FakeDaemon, str],
    jobmanager: tuple[FakeJobManager, Path],
    tmp_path: Path,
) -> None:
    fake, url = daemon
    flink, conf_dir = jobmanager
    flag = tmp_path / "rpc-may-open"
    flag.touch()
    env = flink_env(url, conf_dir) | {
        agent_env.HEARTBEAT_INTERVAL: HEARTBEAT,
        agent_env.TASKMANAGER_PORT: str(free_port()),
        "TEST_RPC_FLAG": str(flag),
    }
    flink.known.add(TM_ID)
    timing = dataclasses.replace(GATED, flink_forgotten_after=0.3)
    agent = start_agent(env, python_command(PORT_OPENER), timing=timing)
    await wait_until(lambda: TM_ID in fake.registered, what="registered")
    flag.unlink()  # the restarted TaskManager will not open its port until told
    fake.forget(TM_ID)
    flink.known.clear()
    await wait_until(
        lambda: len(agent.events("agent.command_started")) == 2, what="the TaskManager restarted"
    )
    restarted_at = time.monotonic()
    await wait_until(
        lambda: sum(1 for at in flink.asked_at if at > restarted_at) >= 3,
        what="asked regardless while the port is closed",
    )
    after = [at for at in flink.asked_at if at > restarted_at]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert min(gaps) >= 0.25, f"asked every {gaps} s while the restarted one starts"
    flag.touch()
    await wait_until(
        lambda: len(agent.events("agent.flink_taskmanager_port_open")) == 2,
        what="the new TaskManager's port seen open",
    )
    flink.known.add(TM_ID)
    asked = len(flink.asked)
    await wait_until(lambda: len(flink.asked) >= asked + 10, what="asked closely again")
    assert len(agent.events("agent.command_started")) == 2, "restarted again"
    assert fake.calls_of("DELETE") == []
    agent.stop.set()
    assert await agent.result() == 0


async def test_while_all_is_well_flink_is_asked_once_per_heartbeat(
    start_agent: AgentStarter,
    daemon: tuple[FakeDaemon, str],
    jobmanager: tuple[FakeJobManager, Path],
) -> None:
    """Registered and listed: one question to Flink per heartbeat, not per poll interval
    (a thousand TaskManagers must not flood the JobManager); a TaskManager Flink forgets
    without the daemon forgetting it is still restarted, found at that pace."""
    fake, url = daemon
    flink, conf_dir = jobmanager
    flink.known.add(TM_ID)
    env = flink_env(url, conf_dir) | {agent_env.HEARTBEAT_INTERVAL: HEARTBEAT}
    agent = start_agent(env, python_command(SLEEPER), timing=FORGETTING)
    await wait_until(lambda: TM_ID in fake.registered, what="registered")
    asked = len(flink.asked)
    await wait_until(lambda: len(fake.calls_of("PUT")) >= 5, what="5 heartbeats")
    assert len(flink.asked) - asked <= 7, "asked Flink more often than once per heartbeat"
    flink.known.clear()
    await wait_until(
        lambda: len(agent.events("agent.command_started")) == 2, what="the TaskManager restarted"
    )
    assert len(fake.calls_of("POST")) == 1
    agent.stop.set()
    assert await agent.result() == 0


async def test_a_jobmanager_that_does_not_answer_restarts_nothing(
    start_agent: AgentStarter,
    daemon: tuple[FakeDaemon, str],
    jobmanager: tuple[FakeJobManager, Path],
) -> None:
    """Only the JobManager's "unknown TaskExecutor" says it forgot: 503s (it cannot say)
    change nothing."""
    fake, url = daemon
    flink, conf_dir = jobmanager
    flink.known.add(TM_ID)
    env = flink_env(url, conf_dir) | {agent_env.HEARTBEAT_INTERVAL: HEARTBEAT}
    agent = start_agent(env, python_command(SLEEPER), timing=FORGETTING)
    await wait_until(lambda: TM_ID in fake.registered, what="registered")
    fake.forget(TM_ID)  # so the agent asks Flink closely
    flink.unknown_status = 503
    flink.known.clear()
    await wait_until(lambda: len(fake.calls_of("POST")) == 2, what="registered again")
    asked = len(flink.asked)
    await wait_until(lambda: len(flink.asked) >= asked + 40, what="polls over 0.8 s")
    assert len(agent.events("agent.command_started")) == 1
    assert agent.events("agent.flink_forgot_taskmanager") == []
    agent.stop.set()
    assert await agent.result() == 0


async def test_taskmanager_exit_before_it_is_up_ends_the_agent_with_its_code(
    start_agent: AgentStarter,
    daemon: tuple[FakeDaemon, str],
    jobmanager: tuple[FakeJobManager, Path],
) -> None:
    fake, url = daemon
    _, conf_dir = jobmanager
    command = python_command("import time, sys; time.sleep(0.3); sys.exit(3)")
    agent = start_agent(flink_env(url, conf_dir), command, timing=TIMING)
    assert await agent.result() == 3
    assert fake.calls_of("POST") == []


async def test_unreadable_flink_configuration_is_a_usage_error(
    start_agent: AgentStarter, daemon: tuple[FakeDaemon, str], tmp_path: Path
) -> None:
    _, url = daemon
    (tmp_path / "config.yaml").write_text("rest.port: '8081'\n")  # no jobmanager.rpc.address
    agent = start_agent(flink_env(url, tmp_path), python_command("pass"), timing=TIMING)
    assert await agent.result() == EXIT_USAGE
    [event] = agent.events("agent.environment_invalid")
    assert "jobmanager.rpc.address" in event["error"]


def test_the_log_file_is_read_from_the_command_line() -> None:
    assert taskmanager_log_file(["java", "-Dlog.file=/l/tm.log", "Runner"]) == Path("/l/tm.log")
    assert taskmanager_log_file(["kubernetes-taskmanager.sh", "-D", "a=b"]) is None
    assert taskmanager_log_file(["java", "-Dlog.file="]) is None


async def test_only_what_the_log_gains_counts_and_a_rolled_log_is_read_anew(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "tm.log"
    async with aiohttp.ClientSession() as session:
        probe = FlinkTaskManagerProbe(
            session=session,
            rest_url="http://127.0.0.1:1",
            resource_id=TM_ID,
            request_timeout=1.0,
            log_file=log_file,
        )
        assert not probe.registration_logged()  # no file yet
        log_file.write_text("starting\n" + REGISTERED)
        assert probe.registration_logged()
        with log_file.open("a") as log:
            log.write("more lines\n")
        assert not probe.registration_logged(), "an old line counted again"
        log_file.write_text(REGISTERED[:10])  # rolled over at a restart: a new, shorter file
        assert not probe.registration_logged()
        with log_file.open("a") as log:
            log.write(REGISTERED[10:])
        assert probe.registration_logged()
        # rolled over again, the new file already longer than what was read of the old one
        log_file.rename(tmp_path / "tm.log.1")
        log_file.write_text("x" * 10_000 + REGISTERED)
        assert probe.registration_logged()
