"""The TaskManager side of the daemon's HTTP API (API.md), one call per method.

Every call has a timeout and never raises for what the network or the daemon does: it returns
an :data:`Answer` that says what the agent should do next (carry on, register again, give up,
or try again later).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from rmd.core.clock import Clock

RELEASING = "releasing"  # TaskManagerView.state when the daemon releases the TaskManager
_DETAIL_LIMIT = 300  # characters of a non-JSON error body kept for the log


@dataclass(frozen=True, slots=True)
class Accepted:
    """2xx. ``state`` is the TaskManagerView's state (None when the answer has no body)."""

    state: str | None
    view: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unknown:
    """404: the daemon does not know this TaskManager (any more).

    ``released`` when the answer says the daemon is releasing it (then it is no restart).
    """

    detail: str
    released: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    """403: the daemon will not have this TaskManager; ``released`` when it is releasing it."""

    detail: str
    released: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """Another 4xx (bad token, malformed request): repeating the call cannot help."""

    status: int
    detail: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No usable answer (connection, timeout, 5xx, 408, 429): try again later.

    ``retry_after`` is the daemon's own ``Retry-After`` in seconds, when it sent one;
    ``leader_url`` where the leader answers, when a standby daemon said so (high
    availability); ``unreachable`` when no daemon answered at all.
    """

    error: str
    retry_after: float | None = None
    leader_url: str | None = None
    unreachable: bool = False


Answer = Accepted | Unknown | Refused | Rejected | Unavailable

_RETRYABLE_STATUSES = frozenset({408, 425, 429})


class ResourceManagerClient:
    """Calls ``/v1/taskmanagers`` on the daemon at ``base_url`` through ``session``.

    With standby daemons, a standby answers 503 with the leader's address: the call goes
    there at once, and so do the next ones, until the leader cannot be reached any more —
    then it is ``base_url`` (the Service) again, which finds the next leader."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        auth_token: str | None,
        request_timeout: float,
        clock: Clock,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._target = self._base_url  # the leader's address once a standby named it
        self._headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        self._request_timeout = request_timeout
        self._clock = clock

    async def register(self, taskmanager_id: str, *, address: str, slots: int) -> Answer:
        body = {"taskmanager_id": taskmanager_id, "address": address, "slots": slots}
        return await self._call("POST", "/v1/taskmanagers", body=body)

    async def heartbeat(self, taskmanager_id: str) -> Answer:
        return await self._call("PUT", f"{_taskmanager_path(taskmanager_id)}/heartbeat", body={})

    async def deregister(self, taskmanager_id: str, *, time_limit: float) -> Answer:
        return await self._call("DELETE", _taskmanager_path(taskmanager_id), time_limit=time_limit)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        time_limit: float | None = None,
    ) -> Answer:
        answer = await self._send(method, path, body=body, time_limit=time_limit)
        if isinstance(answer, Unavailable):
            if answer.leader_url is not None and answer.leader_url != self._target:
                self._target = answer.leader_url  # a standby named the leader: go there now
                answer = await self._send(method, path, body=body, time_limit=time_limit)
            if isinstance(answer, Unavailable) and answer.unreachable:
                self._target = self._base_url  # the leader is gone: ask the Service again
        return answer

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    @property
    def auth_headers(self) -> Mapping[str, str]:
        """The headers every call carries (the bearer token, when there is one)."""
        return self._headers

    @property
    def target_url(self) -> str:
        """Where calls go now: ``base_url``, or the leader a standby named."""
        return self._target

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None,
        time_limit: float | None,
    ) -> Answer:
        seconds = self._request_timeout if time_limit is None else time_limit
        try:
            async with self._session.request(
                method,
                self._target + path,
                json=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                text = await response.text(errors="replace")
                return answer_for(
                    status=response.status,
                    text=text,
                    retry_after=response.headers.get("Retry-After"),
                    now_wall=self._clock.wall(),
                )
        except TimeoutError:
            return Unavailable(f"{method} {path}: no answer within {seconds:g} s", unreachable=True)
        except aiohttp.ClientError as error:
            return Unavailable(
                f"{method} {path}: {type(error).__name__}: {error}", unreachable=True
            )


def answer_for(*, status: int, text: str, retry_after: str | None, now_wall: float) -> Answer:
    """What an HTTP answer means for the agent (pure; the client's decision table)."""
    document = _json_object(text)
    if 200 <= status < 300:
        state = document.get("state")
        return Accepted(state=state if isinstance(state, str) else None, view=document)
    detail = _detail(status, document, text)
    if status == 404:
        return Unknown(detail, released=_says_released(document, detail))
    if status == 403:
        return Refused(detail, released=_says_released(document, detail))
    if status >= 500 or status in _RETRYABLE_STATUSES:
        leader_url = document.get("leader_url")
        return Unavailable(
            detail,
            retry_after=parse_retry_after(retry_after, now_wall=now_wall),
            leader_url=leader_url.rstrip("/")
            if isinstance(leader_url, str) and leader_url
            else None,
        )
    return Rejected(status, detail)


def parse_retry_after(value: str | None, *, now_wall: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now_wall
        except (TypeError, ValueError, IndexError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _taskmanager_path(taskmanager_id: str) -> str:
    return f"/v1/taskmanagers/{quote(taskmanager_id, safe='')}"


def _json_object(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text) if text else {}
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _detail(status: int, document: Mapping[str, Any], text: str) -> str:
    for key in ("detail", "title"):
        value = document.get(key)
        if isinstance(value, str) and value:
            return f"HTTP {status}: {value}"
    snippet = " ".join(text.split())[:_DETAIL_LIMIT]
    return f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}"


def _says_released(document: Mapping[str, Any], detail: str) -> bool:
    """A 403/404 for a TaskManager the daemon is releasing (not one it never created or lost)."""
    if document.get("state") == RELEASING:
        return True
    return "being released" in detail.lower()
