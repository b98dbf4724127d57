"""The HTTP server as the daemon runs it (rmd.api.server.ApiRunner), over raw sockets: what
aiohttp's parser refuses is answered as problem+json, slow bodies get a 408, connections that
sit idle (or trickle their headers) are closed after the idle timeout."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from rmd.api.server import ApiRunner
from tests.support.waiting import eventually_true, within
from tests.unit.api_fake_engine import make_app, make_engine, served_api

TOKEN = "s3cret-token-9f2c"


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, object]:
        assert self.headers["content-type"].startswith("application/problem+json")
        parsed = json.loads(self.body)
        assert isinstance(parsed, dict)
        return parsed


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(status=int(status_line.split()[1]), headers=headers, body=body)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server still sends until it closes the connection."""
    return await reader.read()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_a_nul_in_a_header_is_a_400_problem_and_the_connection_closes() -> None:
    async with served_api(make_app(make_engine(), auth_token=TOKEN)) as (port, _):
        reader, writer = await connect(port)
        writer.write(
            f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "X-Broken: a\x00b\r\n\r\n".encode()
        )
        response = await within(read_response(reader), seconds=5, what="the 400")
        rest = await within(closed_by_server(reader), seconds=5, what="the server to close")
        writer.close()

    assert response.status == 400
    problem = response.problem()
    assert problem["type"] == "urn:rmd:problem:malformed-request"
    assert problem["status"] == 400
    assert "not valid HTTP/1.1" in str(problem["detail"])
    assert TOKEN not in response.body.decode()
    assert rest == b""  # and the connection is closed


@pytest.mark.parametrize(
    ("request_head", "meaning"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "too long"),
        (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", "method"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", "malformed"),
    ],
)
async def test_every_request_the_parser_refuses_is_a_problem(
    request_head: bytes, meaning: str
) -> None:
    async with served_api(make_app(make_engine())) as (port, _):
        reader, writer = await connect(port)
        writer.write(request_head)
        response = await within(read_response(reader), seconds=5, what="the 400")
        writer.close()

    assert response.status == 400
    assert meaning in str(response.problem()["detail"])


async def test_a_body_trickled_byte_by_byte_is_cut_off_with_a_408() -> None:
    engine = make_engine()
    body = json.dumps({"slots": 2}).encode()
    async with served_api(make_app(engine, body_timeout=0.5)) as (port, _):
        reader, writer = await connect(port)
        writer.write(
            b"PUT /v1/jobs/j1/requirements HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        answer = asyncio.create_task(read_response(reader))
        for byte in body:
            if answer.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait([answer], timeout=0.2)  # the client's pace: 5 bytes a second
        response = await within(answer, seconds=5, what="the 408")
        rest = await within(closed_by_server(reader), seconds=5, what="the server to close")
        writer.close()

    assert response.status == 408
    problem = response.problem()
    assert problem["type"] == "urn:rmd:problem:request-timeout"
    assert "0.5 s" in str(problem["detail"])
    assert response.headers["connection"].lower() == "close"
    assert rest == b""
    assert engine.applied == []  # nothing was declared


async def test_headers_trickled_in_are_cut_off_after_the_idle_timeout() -> None:
    async with served_api(make_app(make_engine()), idle_timeout=0.5) as (port, _):
        reader, writer = await connect(port)
        closed = asyncio.create_task(closed_by_server(reader))
        sent = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            if closed.done():
                break
            writer.write(bytes([byte]))
            sent += 1
            await asyncio.wait([closed], timeout=0.05)
        answered = await within(closed, seconds=5, what="the server to close")
        held = loop.time() - started
        writer.close()

    assert answered == b""  # no response: the request never completed
    assert sent < 60  # closed after about 0.5 s of trickling, not after all 235 bytes
    assert held < 3


async def test_idle_keep_alive_connections_are_closed_and_heartbeats_still_served() -> None:
    """Hundreds of idle connections: a request on another connection is answered at once
    while they are open, and all of them are closed after the idle timeout."""
    async with served_api(make_app(make_engine()), idle_timeout=1.0) as (port, runner):
        idle = [await connect(port) for _ in range(300)]
        # one of them was used for a request first: the timer restarts after the response
        used_reader, used_writer = idle[0]
        used_writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await within(read_response(used_reader), seconds=5, what="healthz")).status == 200

        reader, writer = await connect(port)
        writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        served = await within(read_response(reader), seconds=1, what="a request beside them")
        assert served.status == 200

        leftovers = await within(
            asyncio.gather(*(closed_by_server(r) for r, _ in idle)),
            seconds=10,
            what="every idle connection to be closed",
        )
        await eventually_true(
            lambda: open_connections(runner) == 0, what="the server to forget them", timeout=5
        )
        for _, w in [*idle, (reader, writer)]:
            w.close()

    assert leftovers == [b""] * len(idle)


def open_connections(runner: ApiRunner) -> int:
    server = runner.server
    assert server is not None
    return len(server.connections)
