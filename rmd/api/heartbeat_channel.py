"""The heartbeat channel: one WebSocket per TaskManager, heartbeats without an answer each.

``GET /v1/taskmanagers/{id}/heartbeat-channel`` with a WebSocket upgrade (API.md, "Additions:
the heartbeat channel"). The upgrade passes the same middlewares as every /v1 call (bearer
token, leader gate, readiness gate); the upgrade itself and then every text frame the agent
sends is one heartbeat, the same core event as ``PUT .../heartbeat``
(:meth:`rmd.core.allocator.Allocator.heartbeat`: a timestamp moves, nothing wakes). The daemon
sends nothing while the heartbeats are accepted. When a heartbeat would not have been
answered 200 — the TaskManager is unknown or being released (404), the token is no longer
accepted (401), this daemon no longer leads (503 ``not-leader`` with ``leader_url``), a
malformed frame (400/422) — it sends, in one text frame, the problem+json document the
HTTP heartbeat would have answered, and closes the channel with code ``4000 + status``.

The token and the leadership are checked for every frame exactly as the middlewares check
every HTTP heartbeat (:func:`rmd.api.middleware.check_bearer_token`, :func:`check_leader`).
A channel on which nothing arrives for :data:`rmd.api.server.IDLE_TIMEOUT` is closed, as an
idle HTTP connection is (one sweep every :data:`SWEEP_EVERY` seconds over the open channels,
rather than a timer per receive); its TaskManager is judged by its heartbeat timeout, as
ever. On shutdown every open channel is closed with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from rmd.api.keys import AUTH_TOKEN, CHANNEL_IDLE_TIMEOUT, CHANNELS, ENGINE, LEADERSHIP, METRICS
from rmd.api.middleware import (
    check_bearer_token,
    check_leader,
    core_error_problem,
    offered_bearer_token,
)
from rmd.api.problems import MALFORMED_REQUEST, ProblemError, problem_document
from rmd.api.validation import (
    MAX_BODY_BYTES,
    check_slot_report_fits,
    parse_json_object,
    parse_slot_report,
    parse_taskmanager_id,
)
from rmd.core.model import CoreError

__all__ = [
    "CHANNEL_PATH",
    "CLOSE_CODE_BASE",
    "SWEEP_EVERY",
    "channel_housekeeping",
    "close_channels_on_shutdown",
    "close_code_for",
    "routes",
]

log = structlog.get_logger("rmd.api")

CHANNEL_PATH = "/v1/taskmanagers/{taskmanager_id}/heartbeat-channel"
# The close code after a problem frame: 4000 + the HTTP status the problem has (4404, 4401,
# 4503, ...): the private-use range of RFC 6455, so a client that reads no frame still knows.
CLOSE_CODE_BASE = 4000
SWEEP_EVERY = 10.0  # seconds between two looks for channels silent for the idle timeout

routes = web.RouteTableDef()


def close_code_for(status: int) -> int:
    """The WebSocket close code that goes with a problem of HTTP ``status``."""
    return CLOSE_CODE_BASE + status


@routes.get(CHANNEL_PATH)
async def heartbeat_channel(request: web.Request) -> web.StreamResponse:
    taskmanager_id = parse_taskmanager_id(request.match_info["taskmanager_id"])
    channel = web.WebSocketResponse(max_msg_size=MAX_BODY_BYTES, autoping=True)
    if not channel.can_prepare(request).ok:
        raise ProblemError(
            MALFORMED_REQUEST,
            "This is the heartbeat channel: open it with a WebSocket upgrade (GET with "
            "'Upgrade: websocket'), or send heartbeats with PUT /v1/taskmanagers/{id}/heartbeat.",
        )
    offered = offered_bearer_token(request.headers.get("Authorization", ""))
    await channel.prepare(request)
    channels = request.app[CHANNELS]
    metrics = request.app[METRICS]
    channels.seen(channel)
    metrics.heartbeat_channel_opened()
    try:
        problem = _beat(request.app, taskmanager_id, offered, "{}")  # the upgrade is one
        while problem is None:
            message = await channel.receive()
            if message.type is WSMsgType.TEXT:
                channels.seen(channel)
                problem = _beat(request.app, taskmanager_id, offered, message.data)
            elif message.type is WSMsgType.BINARY:
                problem = ProblemError(
                    MALFORMED_REQUEST,
                    "The heartbeat channel takes text frames holding a heartbeat body ({} or "
                    "a slot report), not binary frames.",
                )
            else:  # closed by the agent, by the sweep or the shutdown, or the connection broke
                return channel
        await _say_and_close(channel, problem)
    finally:
        channels.forget(channel)
        metrics.heartbeat_channel_closed()
    return channel


def _beat(
    app: web.Application, taskmanager_id: str, offered: bytes | None, text: str
) -> ProblemError | None:
    """One heartbeat frame, judged as the middlewares and the HTTP heartbeat judge one; the
    problem the HTTP heartbeat would have answered, or None (accepted: nothing is sent)."""
    try:
        tokens = app[AUTH_TOKEN]
        if tokens is not None:
            check_bearer_token(tokens, offered)
        leadership = app[LEADERSHIP]
        if leadership is not None:
            check_leader(leadership)
        engine = app[ENGINE]
        if text != "{}":  # the usual frame: nothing to parse
            report = parse_slot_report(
                parse_json_object(text.encode("utf-8"), empty_means={}),
                taskmanager_id=taskmanager_id,
            )
            if report:
                slots_total = engine.allocator.taskmanager_view(taskmanager_id).slots_total
                check_slot_report_fits(report, slots_total=slots_total)
        actions = engine.allocator.heartbeat(taskmanager_id)
        if actions:
            engine.apply(actions)
    except ProblemError as problem:
        return problem
    except CoreError as error:
        return core_error_problem(error)
    return None


async def _say_and_close(channel: web.WebSocketResponse, problem: ProblemError) -> None:
    document = problem_document(
        problem.kind, problem.detail, field=problem.field, extensions=problem.extensions
    )
    with contextlib.suppress(ConnectionError, RuntimeError):  # the agent may be gone already
        await channel.send_str(json.dumps(document))
    await channel.close(
        code=close_code_for(problem.kind.status), message=problem.kind.title.encode("utf-8")
    )


async def _close_all(channels: Iterable[web.WebSocketResponse], code: int, why: str) -> None:
    closing = [channel.close(code=code, message=why.encode("utf-8")) for channel in channels]
    await asyncio.gather(*closing, return_exceptions=True)


async def channel_housekeeping(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: sweep silent channels while serving; close all at the end."""
    channels = app[CHANNELS]
    idle_timeout = app[CHANNEL_IDLE_TIMEOUT]

    async def sweep() -> None:
        while True:
            await asyncio.sleep(min(SWEEP_EVERY, idle_timeout / 2))
            stale = channels.stale(idle_timeout)
            if stale:
                log.info("heartbeat_channels_idle_closed", channels=len(stale))
                await _close_all(stale, WSCloseCode.GOING_AWAY, "idle")

    sweeper = asyncio.create_task(sweep(), name="heartbeat-channel-sweep")
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


async def close_channels_on_shutdown(app: web.Application) -> None:
    """aiohttp on_shutdown: the agents fall back to HTTP (and find the next daemon)."""
    await _close_all(list(app[CHANNELS].last_frame), WSCloseCode.GOING_AWAY, "shutting down")
