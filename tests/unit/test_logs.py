"""The daemon's logs: no credential reaches a log line (the redaction processor, and the case
that leaked it — aiohttp logging a request it could not parse, raw headers included); JSON
lines off a terminal, console lines on one; every line a request causes carries its id."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
import pytest
import structlog

from rmd.api.access_log import StructlogAccessLogger
from rmd.core.allocator import Allocator
from rmd.core.model import Action
from rmd.logs import REDACTED, configure_logging, redact_credentials
from tests.support.waiting import eventually_true
from tests.unit.api_fake_engine import InMemoryEngine, make_app, make_engine, served_api

TOKEN = "s3cret-token-9f2c"
ServerFactory = Any  # pytest-aiohttp's aiohttp_server fixture


def test_bearer_tokens_are_redacted_in_every_field_and_nesting() -> None:
    event = {
        "event": f"Authorization: Bearer {TOKEN}",
        "exception": [{"exc_value": f"bad header b'Bearer {TOKEN}\\x00'", "frames": []}],
        "url": f"http://x/?token={TOKEN}&a=1",
        "count": 3,
    }
    redacted = redact_credentials(None, "info", dict(event))
    assert TOKEN not in repr(redacted)
    assert redacted["event"] == f"Authorization: Bearer {REDACTED}"
    assert redacted["url"] == f"http://x/?token={REDACTED}&a=1"
    assert redacted["count"] == 3


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Whatever a test configures is undone afterwards (logging is process-wide)."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def real_logging(restored_logging: None) -> None:
    """The daemon's own logging set-up (JSON), undone afterwards."""
    configure_logging(level="debug", json=True)


@pytest.mark.usefixtures("real_logging")
async def test_a_request_aiohttp_cannot_parse_does_not_log_the_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with served_api(make_app(make_engine(), auth_token=TOKEN)) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                "X-Broken: a\x00b\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = (await reader.readline()).decode()
            await reader.read()
        finally:
            writer.close()
    assert status_line.split()[1] == "400"
    logged = capsys.readouterr().err
    assert "malformed_request" in logged
    assert TOKEN not in logged


# ---------------------------------------------------------------- format and request ids


@pytest.mark.usefixtures("restored_logging")
def test_json_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="info")
    structlog.get_logger("t").info("pod_created", pod="p-1")
    logging.getLogger("aiohttp.server").warning("library line")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [
        ("pod_created", "info"),
        ("library line", "warning"),
    ]
    assert lines[0]["pod"] == "p-1"


@pytest.mark.usefixtures("restored_logging")
def test_readable_console_lines_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    controller, terminal = os.openpty()
    with os.fdopen(terminal, "w", buffering=1) as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        configure_logging(level="info")
        structlog.get_logger("t").info("pod_created", pod="p-1")
        tty.flush()
        written = os.read(controller, 65536).decode()
    os.close(controller)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", written)  # colours, if any
    assert "pod_created" in plain
    assert "pod=p-1" in plain
    assert not plain.lstrip().startswith("{")


class LoggingEngine(InMemoryEngine):
    """The in-memory engine, logging as the daemon's does: at once, and from a task it
    starts (as a pod create runs after the response has gone)."""

    def __init__(self, allocator: Allocator) -> None:
        super().__init__(allocator)
        self.tasks: list[asyncio.Task[None]] = []

    def apply(self, actions: Sequence[Action]) -> None:
        super().apply(actions)
        structlog.get_logger("rmd.driver").info("applied", actions=len(actions))

        async def later() -> None:
            await asyncio.sleep(0)
            structlog.get_logger("rmd.driver").info("pod_created_later")

        self.tasks.append(asyncio.get_running_loop().create_task(later()))


@pytest.mark.usefixtures("restored_logging")
async def test_every_line_a_request_causes_carries_its_request_id(
    aiohttp_server: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(level="info", json=True)
    engine = LoggingEngine(make_engine().allocator)
    server = await aiohttp_server(make_app(engine), access_log_class=StructlogAccessLogger)
    capsys.readouterr()
    async with aiohttp.ClientSession() as http:
        url = f"http://{server.host}:{server.port}/v1/jobs/j/requirements"
        async with http.put(url, json={"slots": 2}, headers={"X-Request-Id": "req-9"}) as resp:
            assert resp.status == 200
    await asyncio.gather(*engine.tasks)
    captured: list[str] = []

    def access_logged() -> bool:  # aiohttp logs the request after the response went out
        captured.extend(capsys.readouterr().err.splitlines())
        return any('"http_request"' in line for line in captured)

    await eventually_true(access_logged, what="the access log line", timeout=5)
    lines = [json.loads(line) for line in captured]
    caused = {line["event"]: line.get("request_id") for line in lines}
    assert caused == {"applied": "req-9", "pod_created_later": "req-9", "http_request": "req-9"}
