"""``rmd status`` against the real app (the real allocator) served on a real port: tables,
JSON, YAML, ``--watch`` on a pipe and on a terminal, and its one-line failures."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from rmd.core.clock import ManualClock
from rmd.core.model import PodObservation
from rmd.status_cli import REDRAW, run_status
from rmd.status_render import age
from tests.support.waiting import eventually_true, within
from tests.unit.api_fake_engine import InMemoryEngine, make_app, make_engine

ServerFactory = Any
TOKEN = "status-token"
CLUSTER_AGE = 3630.0  # the first pods were created 1 h 30 s ago ...
BATCH_AGE = 625.0  # ... the batch job came 10 min 25 s ago (the CLI measures in real time)
BATCH_AGE_SHOWN = re.compile(r"10m[23][0-9]s")


def observe(engine: InMemoryEngine, pod: PodObservation) -> None:
    engine.apply(engine.allocator.pod_observed(pod))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall_start=time.time() - CLUSTER_AGE)


@pytest.fixture
def engine(clock: ManualClock) -> InMemoryEngine:
    """Two registered busy TaskManagers, one pending in ImagePullBackOff, one requested, one
    releasing; a fulfilled job, a waiting job, a job needing nothing."""
    engine = make_engine(slots_per_taskmanager=2, clock=clock)
    engine.apply(engine.allocator.declare("wordcount", 4))
    first, second = engine.start_requested_pods()
    for number, (name, node) in enumerate([(first, "node-1"), (second, "node-2")], start=1):
        running = PodObservation(name, phase="Running", node_name=node, pod_ip=f"10.0.0.{number}")
        observe(engine, running)
        engine.register(name, address=f"10.0.0.{number}:6122", slots=2)
    clock.advance(CLUSTER_AGE - BATCH_AGE)
    engine.apply(engine.allocator.declare("batch", 4))
    engine.apply(engine.allocator.declare("cancelled", 2))
    pulling, requested, cancelled = engine.created_pods()[2:]
    engine.apply(engine.allocator.create_succeeded(pulling))
    observe(
        engine,
        PodObservation(
            pulling, node_name="node-1", waiting_problem=("ImagePullBackOff", "image x not found")
        ),
    )
    engine.apply(engine.allocator.remove_job("cancelled"))
    engine.apply(engine.allocator.declare("idle-job", 0))
    assert engine.allocator.taskmanager_view(requested).state == "requested"
    assert engine.allocator.taskmanager_view(cancelled).state == "releasing"
    return engine


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def status_command(*argv: str) -> int:
    # run_status runs its own event loop: give it a thread, the test's loop serves the app.
    return await asyncio.to_thread(run_status, list(argv))


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("  ") if cell.strip()]


def row(lines: list[str], first_cell: str) -> list[str]:
    [found] = [cells(line) for line in lines if line.split(" ")[0] == first_cell]
    return found


async def test_tables_show_nodes_ages_slots_and_why_jobs_wait(
    aiohttp_server: ServerFactory, engine: InMemoryEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await aiohttp_server(make_app(engine))

    code = await status_command("--url", url_of(server))

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    summary = (
        "TaskManagers: 2 registered, 1 pending, 1 requested, 1 releasing; slots: 4 used, "
        "0 free of 4; jobs: 3, 1 waiting (longest AGE); pending slot demand: 4"
    )
    assert re.fullmatch(re.escape(summary).replace("AGE", BATCH_AGE_SHOWN.pattern), lines[0])
    tm = "flink-1-taskmanager-1-"
    assert cells(next(line for line in lines if line.startswith("TASKMANAGER"))) == [
        "TASKMANAGER",
        "STATE",
        "SLOTS",
        "NODE",
        "AGE",
        "IDLE",
        "PROBLEM",
    ]
    assert row(lines, f"{tm}1") == [f"{tm}1", "registered", "2/2", "node-1", "1h", "-", "-"]
    assert row(lines, f"{tm}2") == [f"{tm}2", "registered", "2/2", "node-2", "1h", "-", "-"]
    pulling = row(lines, f"{tm}3")
    assert pulling[:4] == [f"{tm}3", "pending", "0/2", "node-1"]
    assert BATCH_AGE_SHOWN.fullmatch(pulling[4])
    assert pulling[5:] == ["-", "ImagePullBackOff: image x not found"]
    requested = row(lines, f"{tm}4")
    assert requested[:4] == [f"{tm}4", "requested", "0/2", "-"]
    assert BATCH_AGE_SHOWN.fullmatch(requested[4])
    assert requested[5:] == ["-", "-"]
    assert row(lines, f"{tm}5")[1:3] == ["releasing", "0/2"]
    assert cells(next(line for line in lines if line.startswith("JOB"))) == [
        "JOB",
        "SLOTS",
        "FULFILLED",
        "WAITING",
        "REASON",
    ]
    assert row(lines, "wordcount") == ["wordcount", "4/4", "yes", "-", "-"]
    batch = row(lines, "batch")
    assert batch[:3] == ["batch", "0/4", "no"]
    assert BATCH_AGE_SHOWN.fullmatch(batch[3])
    assert "ImagePullBackOff" in batch[4]
    assert row(lines, "idle-job") == ["idle-job", "0/0", "yes", "-", "-"]


async def test_an_idle_taskmanager_shows_how_long_it_has_been_idle(
    aiohttp_server: ServerFactory, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(slots_per_taskmanager=2, clock=clock)
    engine.apply(engine.allocator.declare("j", 2))
    [name] = engine.start_requested_pods()
    engine.register(name, slots=2)
    engine.apply(engine.allocator.remove_job("j"))
    clock.advance(CLUSTER_AGE - 75)  # idle since 1 h ago, seen 1 min 15 s ago
    server = await aiohttp_server(make_app(engine))

    assert await status_command("--url", url_of(server)) == 0

    lines = capsys.readouterr().out.splitlines()
    assert row(lines, name)[1:6] == ["registered", "0/2", "-", "1h", "1h"]


async def test_json_and_yaml_are_the_three_documents_as_one(
    aiohttp_server: ServerFactory, engine: InMemoryEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await aiohttp_server(make_app(engine))

    assert await status_command("--url", url_of(server), "-o", "json") == 0
    as_json = json.loads(capsys.readouterr().out)
    assert await status_command("--url", url_of(server), "--output", "yaml") == 0
    as_yaml = yaml.safe_load(capsys.readouterr().out)

    assert as_json == as_yaml
    assert set(as_json) == {"status", "taskmanagers", "jobs"}
    assert as_json["status"]["taskmanagers"] == {
        "requested": 1,
        "pending": 1,
        "registered": 2,
        "releasing": 1,
    }
    assert as_json["status"]["jobs_waiting"] == 1
    assert as_json["status"]["pending_taskmanagers_by_reason"]["image-pull"] == 1
    assert [job["job_id"] for job in as_json["jobs"]] == ["wordcount", "batch", "idle-job"]
    [batch] = [job for job in as_json["jobs"] if job["job_id"] == "batch"]
    assert batch["waiting_since"].endswith("Z")
    assert [tm["node_name"] for tm in as_json["taskmanagers"]] == [
        "node-1",
        "node-2",
        "node-1",
        None,
        None,
    ]


def test_ages_read_like_kubectl() -> None:
    assert [age(s) for s in (0, 7.9, 60, 250, 3600, 11_520, 86_400, 93_600)] == [
        "0s",
        "7s",
        "1m",
        "4m10s",
        "1h",
        "3h12m",
        "1d",
        "1d2h",
    ]


# ---------------------------------------------------------------------------- --watch


async def next_line(stream: asyncio.StreamReader, *, what: str) -> str:
    line = await within(stream.readline(), seconds=20, what=what)
    assert line, f"the watch ended before {what}"
    return line.decode()


async def next_table(stream: asyncio.StreamReader) -> list[str]:
    """One table of a watch on a pipe: its lines up to the blank line after the job table."""
    lines = [await next_line(stream, what="a table")]
    while not (lines[-1] == "\n" and any(line.startswith("JOB") for line in lines)):
        lines.append(await next_line(stream, what="the rest of the table"))
    return [line.rstrip("\n") for line in lines[:-1]]


async def rmd_status(*argv: str, stdout: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rmd", "status", *argv, stdout=stdout, stderr=asyncio.subprocess.PIPE
    )


async def interrupt(process: asyncio.subprocess.Process) -> int:
    """Ctrl-C, as a user ends a watch; the exit code."""
    process.send_signal(signal.SIGINT)
    return await within(process.wait(), seconds=20, what="the watch to end on Ctrl-C")


async def test_watch_on_a_pipe_prints_one_json_line_per_change(
    aiohttp_server: ServerFactory, engine: InMemoryEngine
) -> None:
    server = await aiohttp_server(make_app(engine))
    argv = ("--url", url_of(server), "--watch", "--interval", "0.1", "-o", "json")
    process = await rmd_status(*argv, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        first = json.loads(await next_line(process.stdout, what="the first document"))
        assert first["status"]["jobs"] == 3

        engine.apply(engine.allocator.declare("late", 2))
        second = json.loads(await next_line(process.stdout, what="a document for the new job"))
        assert second["status"]["jobs"] == 4
        assert second["jobs"][-1]["job_id"] == "late"

        engine.apply(engine.allocator.remove_job("late"))
        third = json.loads(await next_line(process.stdout, what="a document without it"))
        assert third["status"]["jobs"] == 3
    finally:
        code = await interrupt(process)
    assert code == 130
    assert await process.stderr.read() == b""


async def test_watch_on_a_pipe_prints_a_table_only_when_something_changed(
    aiohttp_server: ServerFactory, engine: InMemoryEngine, clock: ManualClock
) -> None:
    polls: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        polls.append(request.path)
        response: web.StreamResponse = await handler(request)
        return response

    app = make_app(engine)
    app.middlewares.append(count)
    server = await aiohttp_server(app)
    process = await rmd_status(
        "--url", url_of(server), "-w", "--interval", "0.1", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        first = await next_table(process.stdout)
        assert first[0].startswith("TaskManagers: 2 registered")
        # /v1/status's oldest_wait_seconds grows: no change of state (below the 10 s after
        # which the requested TaskManager's create would count as unanswered: a real change).
        clock.advance(5)
        polled = polls.count("/v1/status")
        await eventually_true(lambda: polls.count("/v1/status") >= polled + 10, what="10 polls")
        engine.apply(engine.allocator.remove_job("idle-job"))
        second = await next_table(process.stdout)
    finally:
        await interrupt(process)
    assert "; jobs: 2, 1 waiting (longest " in second[0]
    assert not any(line.startswith("idle-job") for line in second)
    assert await process.stdout.read() == b""  # nothing more between and after


async def test_watch_on_a_terminal_redraws_in_place(
    aiohttp_server: ServerFactory, engine: InMemoryEngine
) -> None:
    server = await aiohttp_server(make_app(engine))
    controller, terminal = pty.openpty()
    process = await rmd_status(
        "--url", url_of(server), "--watch", "--interval", "0.1", stdout=terminal
    )
    os.close(terminal)
    seen = b""

    async def read_until_three_redraws() -> None:
        nonlocal seen
        loop = asyncio.get_running_loop()
        while seen.count(REDRAW.encode()) < 3:
            seen += await loop.run_in_executor(None, os.read, controller, 65536)

    try:
        await within(read_until_three_redraws(), seconds=20, what="three redraws")
    finally:
        code = await interrupt(process)
        os.close(controller)
    assert code == 130
    screens = [screen for screen in seen.decode().split(REDRAW) if screen]
    assert len(screens) >= 2  # the same state, drawn again in place
    assert all(screen.startswith("TaskManagers: 2 registered") for screen in screens)


# ---------------------------------------------------------------------------- failures


async def test_unreachable_daemon_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    code = await status_command("--url", f"http://127.0.0.1:{port}", "--timeout", "5")

    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith(f"rmd status: cannot reach the daemon at http://127.0.0.1:{port}")


async def test_unreachable_daemon_ends_a_watch_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    code = await status_command("--url", f"http://127.0.0.1:{port}", "--watch", "-o", "yaml")

    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1


async def test_token_file_is_sent_and_a_wrong_token_is_one_line(
    aiohttp_server: ServerFactory,
    engine: InMemoryEngine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RMD_AUTH_TOKEN", raising=False)
    server = await aiohttp_server(make_app(engine, auth_token=TOKEN))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-token\n")

    without = await status_command("--url", url_of(server))
    refused = capsys.readouterr()
    wrong = await status_command("--url", url_of(server), "--token-file", str(wrong_file), "-w")
    refused_wrong = capsys.readouterr()
    with_token = await status_command("--url", url_of(server), "--token-file", str(token_file))

    assert without == 1
    [line] = refused.err.splitlines()
    assert "401" in line
    assert "--token-file" in line
    assert wrong == 1
    assert refused_wrong.out == ""
    [line] = refused_wrong.err.splitlines()
    assert "401" in line
    assert with_token == 0
    assert "wordcount" in capsys.readouterr().out


async def test_missing_token_file_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await status_command("--token-file", str(tmp_path / "absent"))

    assert code == 1
    assert "cannot read the token file" in capsys.readouterr().err


async def test_something_else_than_rmd_is_reported(
    aiohttp_server: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    other = web.Application()
    other.router.add_get("/v1/status", hello)
    server = await aiohttp_server(other)

    code = await status_command("--url", url_of(server))

    assert code == 1
    assert "did not answer with JSON" in capsys.readouterr().err


def test_a_bad_interval_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_status(["--watch", "--interval", "0"])

    assert exited.value.code == 2
    assert "--interval" in capsys.readouterr().err
