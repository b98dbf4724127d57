"""The agent's end of the heartbeat channel (API.md, "Additions: the heartbeat channel").

One WebSocket to ``/v1/taskmanagers/{id}/heartbeat-channel``; each heartbeat is one small text
frame (``{}``) that the daemon does not answer. The daemon speaks only when the agent must act:
one text frame holding the problem+json document the HTTP heartbeat would have answered (404:
register again or, when released, stop; 401; 503 not-leader), then it closes the channel.

How the agent notices a daemon that is gone, without an answer per heartbeat:

- its process ended or restarted: the kernel closes the connection; the reader sees it at once;
- its host or the network is gone: ``TCP_USER_TIMEOUT`` (the agent's request timeout) aborts
  the connection when a heartbeat frame stays unacknowledged by the peer's kernel that long —
  the bound an HTTP heartbeat has (next heartbeat + request timeout);
- its process stands still (the kernel still acknowledges): every ``ping_every``-th heartbeat
  carries a WebSocket ping, and no pong within the request timeout ends the channel.

Every end of the channel is an :data:`rmd.agent.client.Answer` in :attr:`news`; the agent then
falls back to an HTTP heartbeat, which finds out what is there (a new daemon answers 404 → the
agent registers again; a standby names the leader). An upgrade answered 404 (a daemon without
the channel: an older rmd) or anything else that is no WebSocket is :class:`ChannelUnsupported`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from aiohttp import WSMsgType

from rmd.agent.client import Answer, Unavailable, answer_for
from rmd.core.clock import Clock

__all__ = [
    "HEARTBEAT_FRAME",
    "ChannelUnsupported",
    "HeartbeatChannel",
    "channel_answer",
    "close_answer",
    "open_channel",
]

HEARTBEAT_FRAME = "{}"
_PROBLEM_CLOSE_BASE = 4000  # the daemon closes with 4000 + the status of its problem frame


@dataclass(frozen=True, slots=True)
class ChannelUnsupported:
    """The upgrade got no WebSocket: an older daemon (404) or something between (405, 426, ...)."""

    status: int
    detail: str


def channel_answer(text: str, *, now_wall: float) -> Answer:
    """A text frame from the daemon (a problem document) as the HTTP answer it stands for."""
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    status = document.get("status") if isinstance(document, dict) else None
    if not isinstance(status, int) or isinstance(status, bool):
        return Unavailable(
            f"heartbeat channel: a frame that is no problem document: {text[:200]!r}"
        )
    return answer_for(status=status, text=text, retry_after=None, now_wall=now_wall)


def close_answer(code: int | None, *, now_wall: float) -> Answer:
    """The channel closed without a problem frame first: what its close code says."""
    if code is not None and _PROBLEM_CLOSE_BASE + 400 <= code < _PROBLEM_CLOSE_BASE + 600:
        status = code - _PROBLEM_CLOSE_BASE
        return answer_for(status=status, text="", retry_after=None, now_wall=now_wall)
    return Unavailable(f"heartbeat channel closed (code {code})", unreachable=True)


class HeartbeatChannel:
    """An open channel. :meth:`beat` sends a heartbeat; :attr:`news` completes (once) with
    what ends the channel. Not reusable; :meth:`close` it in any case."""

    def __init__(
        self,
        websocket: aiohttp.ClientWebSocketResponse,
        *,
        clock: Clock,
        pong_timeout: float,
        ping_every: int,
    ) -> None:
        self._websocket = websocket
        self._clock = clock
        self._pong_timeout = pong_timeout
        self._ping_every = ping_every
        self._beats = 0
        self._awaiting_pong: asyncio.TimerHandle | None = None
        self.news: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    def _tell(self, answer: Answer) -> None:
        if not self.news.done():
            self.news.set_result(answer)

    async def beat(self) -> None:
        """One heartbeat (and, every ``ping_every``-th, a ping whose pong must come in time)."""
        if self.news.done():
            return
        self._beats += 1
        try:
            await self._websocket.send_str(HEARTBEAT_FRAME)
            if self._ping_every and self._beats % self._ping_every == 0 and not self._awaiting_pong:
                self._awaiting_pong = asyncio.get_running_loop().call_later(
                    self._pong_timeout, self._no_pong
                )
                await self._websocket.ping()
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as error:
            self._tell(Unavailable(f"heartbeat channel: {error!r}", unreachable=True))

    def _no_pong(self) -> None:
        self._tell(
            Unavailable(
                f"heartbeat channel: no pong within {self._pong_timeout:g} s", unreachable=True
            )
        )

    async def _read(self) -> None:
        try:
            while True:
                message = await self._websocket.receive()
                if message.type is WSMsgType.PONG:
                    if self._awaiting_pong is not None:
                        self._awaiting_pong.cancel()
                        self._awaiting_pong = None
                    continue
                if message.type is WSMsgType.PING:
                    await self._websocket.pong(message.data)
                    continue
                if message.type is WSMsgType.TEXT:
                    self._tell(channel_answer(message.data, now_wall=self._clock.wall()))
                    continue  # its close follows
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    self._tell(
                        close_answer(self._websocket.close_code, now_wall=self._clock.wall())
                    )
                    return
                if message.type is WSMsgType.ERROR:
                    error = self._websocket.exception()
                    self._tell(Unavailable(f"heartbeat channel: {error!r}", unreachable=True))
                    return
        except Exception as error:
            self._tell(Unavailable(f"heartbeat channel: {error!r}", unreachable=True))

    async def close(self) -> None:
        if self._awaiting_pong is not None:
            self._awaiting_pong.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._pong_timeout):
                await self._websocket.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._tell(Unavailable("heartbeat channel closed by the agent"))


async def open_channel(
    session: aiohttp.ClientSession,
    *,
    base_url: str,
    taskmanager_id: str,
    headers: Mapping[str, str],
    timeout: float,
    clock: Clock,
    ping_every: int,
) -> HeartbeatChannel | ChannelUnsupported | Answer:
    """Open the channel (the upgrade is a heartbeat). An upgrade refused the way a heartbeat
    is (401, 503: the middlewares' answers) is that :data:`Answer`; no daemon: Unavailable."""
    url = f"{base_url}/v1/taskmanagers/{quote(taskmanager_id, safe='')}/heartbeat-channel"
    try:
        async with asyncio.timeout(timeout):
            websocket = await session.ws_connect(
                url,
                headers=dict(headers),
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
                autoping=False,  # aiohttp would swallow the pongs the liveness check waits for
                heartbeat=None,
                max_msg_size=64 * 1024,
            )
    except aiohttp.WSServerHandshakeError as refused:
        status = refused.status
        if status in (401, 403) or status >= 500 or status in (408, 429):
            retry_after = refused.headers.get("Retry-After") if refused.headers else None
            return answer_for(
                status=status,
                text=json.dumps({"detail": refused.message}),
                retry_after=retry_after,
                now_wall=clock.wall(),
            )
        return ChannelUnsupported(status, f"HTTP {status}: {refused.message}")
    except TimeoutError:
        return Unavailable(f"heartbeat channel: no answer within {timeout:g} s", unreachable=True)
    except aiohttp.ClientError as error:
        return Unavailable(f"heartbeat channel: {type(error).__name__}: {error}", unreachable=True)
    _bound_unacknowledged_sends(websocket, seconds=timeout)
    return HeartbeatChannel(websocket, clock=clock, pong_timeout=timeout, ping_every=ping_every)


def _bound_unacknowledged_sends(
    websocket: aiohttp.ClientWebSocketResponse, *, seconds: float
) -> None:
    """TCP_USER_TIMEOUT: the kernel aborts the connection when sent data stays unacknowledged
    for ``seconds`` (Linux; elsewhere the ping bounds it)."""
    sock = websocket.get_extra_info("socket")
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is None or option is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))
