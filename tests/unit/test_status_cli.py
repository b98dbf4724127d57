"""``rmd status`` against the real app served on a real port."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from rmd.status_cli import run_status
from tests.unit.api_fake_engine import InMemoryEngine, make_app, make_engine

ServerFactory = Any
TOKEN = "status-token"


@pytest.fixture
def engine() -> InMemoryEngine:
    engine = make_engine(slots_per_taskmanager=2, max_slots=4)
    engine.apply(engine.allocator.declare("wordcount", 6))
    [first, _second] = engine.start_requested_pods()
    engine.register(first, address="10.0.0.7:6122", slots=2)
    engine.apply(engine.allocator.declare("idle-job", 0))
    return engine


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def status_command(*argv: str) -> int:
    # run_status runs its own event loop: give it a thread, the test's loop serves the app.
    return await asyncio.to_thread(run_status, list(argv))


async def test_prints_taskmanagers_and_jobs(
    aiohttp_server: ServerFactory, engine: InMemoryEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await aiohttp_server(make_app(engine))

    code = await status_command("--url", url_of(server))

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("TaskManagers: 1 registered, 1 pending, 0 requested")
    assert "pending slot demand: 4" in lines[0]
    [header] = [line for line in lines if line.startswith("TASKMANAGER")]
    assert header.split("  ")[0] == "TASKMANAGER"
    assert [cell.strip() for cell in header.split("  ") if cell.strip()] == [
        "TASKMANAGER",
        "STATE",
        "SLOTS",
        "ADDRESS",
        "IDLE SINCE",
        "PROBLEM",
    ]
    registered = next(line for line in lines if "10.0.0.7:6122" in line)
    assert registered.split()[1:3] == ["registered", "2/2"]
    assert any(line.split()[1:3] == ["pending", "0/2"] for line in lines)
    job = next(line for line in lines if line.startswith("wordcount"))
    assert job.split()[1:4] == ["6", "2", "no"]
    assert "slotmanager.number-of-slots.max" in job
    idle_job = next(line for line in lines if line.startswith("idle-job"))
    assert idle_job.split()[1:5] == ["0", "0", "yes", "-"]


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


async def test_token_file_is_sent(
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

    without = await status_command("--url", url_of(server))
    refused = capsys.readouterr()
    with_token = await status_command("--url", url_of(server), "--token-file", str(token_file))

    assert without == 1
    [line] = refused.err.splitlines()
    assert "401" in line
    assert "--token-file" in line
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
