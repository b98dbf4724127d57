"""An async client of the JobMaster side of rmd's HTTP API (API.md v1).

::

    async with RmdClient("http://my-flink.flink.svc:8090", token=token) as rmd:
        await rmd.declare("job-1", 8)
        view = await rmd.wait_fulfilled("job-1", timeout=120)
        ...
        await rmd.release("job-1")

Every call has a timeout. A ``503`` (the daemon recovering its TaskManagers after a start)
is retried, waiting its ``Retry-After`` plus jitter, at most ``max_attempts`` times in all;
so is a connection error on the idempotent GET and PUT. A 503 from a standby daemon that
names the leader (``leader_url``, high availability) sends the call there at once, and the
next calls too, until the leader cannot be reached — then ``base_url`` (the Service) again.
Error answers raise the typed exceptions of :mod:`rmd.client.errors`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from rmd.agent.client import parse_retry_after
from rmd.client.errors import NotReady, RmdProblem, RmdUnreachable, UnexpectedAnswer
from rmd.client.views import JobView

__all__ = ["RmdClient"]

Sleep = Callable[[float], Awaitable[None]]

DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MAX_RETRY_WAIT = 30.0
_LONG_POLL_CHUNK = 60.0  # seconds of one ?wait= request inside wait_fulfilled()


class RmdClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``session``: use this one (and leave it open); by default the client opens its
        own on first use and :meth:`close` closes it. ``max_attempts``: tries per call, the
        first included. ``max_retry_wait``: the longest wait before a retry, whatever the
        ``Retry-After``."""
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 seconds (got {request_timeout})")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 (got {max_attempts})")
        if token is not None and not token.strip():
            raise ValueError("token is empty: give the bearer token or None")
        self._base_url = base_url.rstrip("/")
        self._target = self._base_url  # the leader's address once a standby named it
        self._headers = {"Authorization": f"Bearer {token.strip()}"} if token else {}
        self._session = session
        self._own_session = session is None
        self._request_timeout = request_timeout
        self._max_attempts = max_attempts
        self._max_retry_wait = max_retry_wait
        self._rng = rng or random.Random()
        self._sleep = sleep

    async def __aenter__(self) -> RmdClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ the API

    async def declare(self, job_id: str, slots: int) -> JobView:
        """``PUT /v1/jobs/{job_id}/requirements``: the job's TOTAL slot need now."""
        body = await self._call(
            "PUT", f"{_job_path(job_id)}/requirements", json_body={"slots": slots}
        )
        return JobView.from_json(body)

    async def job(self, job_id: str, *, wait: float | None = None) -> JobView:
        """``GET /v1/jobs/{job_id}``; with ``wait`` a long poll that answers as soon as the job
        is fulfilled, or after ``wait`` seconds with the current view."""
        body = await self._get_job(job_id, wait=wait, query={})
        return JobView.from_json(body)

    async def wait_fulfilled(self, job_id: str, *, timeout: float) -> JobView:
        """Long-poll until the job is fulfilled or ``timeout`` seconds pass; the last view
        (check ``.fulfilled``; ``.unfulfilled_reason`` says why it waits). The polls ask for
        the compact view (``slots=false``: no slot list, whatever the job's size); the full
        view is read once at the end."""
        deadline = time.monotonic() + timeout
        view = await self.job(job_id)
        if view.fulfilled:
            return view
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            compact = await self._get_job(
                job_id, wait=min(remaining, _LONG_POLL_CHUNK), query={"slots": "false"}
            )
            if compact.get("fulfilled") is True:
                break
        return await self.job(job_id)

    async def _get_job(
        self, job_id: str, *, wait: float | None, query: dict[str, str]
    ) -> Mapping[str, Any]:
        timeout = self._request_timeout
        if wait is not None:
            if not (math.isfinite(wait) and wait > 0):
                raise ValueError(f"wait must be a positive number of seconds (got {wait})")
            query = {**query, "wait": f"{wait:g}"}
            timeout += wait
        body = await self._call("GET", _job_path(job_id), query=query, timeout=timeout)
        if not isinstance(body, Mapping):
            raise UnexpectedAnswer(f"the JobView of {job_id!r} is no JSON object")
        return body

    async def release(self, job_id: str) -> None:
        """``DELETE /v1/jobs/{job_id}``: free all the job's slots and forget it."""
        await self._call("DELETE", _job_path(job_id))

    async def jobs(self) -> list[JobView]:
        """``GET /v1/jobs``."""
        body = await self._call("GET", "/v1/jobs")
        if not isinstance(body, Mapping) or not isinstance(body.get("jobs"), list):
            raise UnexpectedAnswer(f"GET /v1/jobs: expected {{'jobs': [...]}}, got {body!r:.200}")
        return [JobView.from_json(job) for job in body["jobs"]]

    # ------------------------------------------------------------------ plumbing

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        retry_connection_errors = method in ("GET", "PUT")  # idempotent: safe to send again
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self._max_attempts
            try:
                return await self._once(
                    method, path, json_body=json_body, query=query, timeout=timeout
                )
            except NotReady as problem:
                if last:
                    raise
                if problem.leader_url is not None and problem.leader_url != self._target:
                    self._target = problem.leader_url  # a standby named the leader: go now
                    continue
                await self._sleep(self._retry_wait(attempt, problem.retry_after))
            except RmdUnreachable:
                followed = self._target != self._base_url
                self._target = self._base_url  # the leader is gone: ask the Service again
                if last or not retry_connection_errors:
                    raise
                if not followed:
                    await self._sleep(self._retry_wait(attempt, None))

    async def _once(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None,
        query: Mapping[str, str] | None,
        timeout: float | None,
    ) -> Any:
        seconds = self._request_timeout if timeout is None else timeout
        try:
            async with self._client().request(
                method,
                self._target + path,
                json=json_body,
                params=query,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                text = await response.text(errors="replace")
                status = response.status
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), now_wall=time.time()
                )
        except TimeoutError as exc:
            raise RmdUnreachable(f"{method} {path}: no answer within {seconds:g} s") from exc
        except aiohttp.ClientError as exc:
            raise RmdUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if status == 204:
            return None
        document = _json(text)
        if 200 <= status < 300:
            if document is None:
                raise UnexpectedAnswer(f"{method} {path}: status {status} without a JSON body")
            return document
        raise RmdProblem.from_answer(
            status,
            document if isinstance(document, Mapping) else {},
            text=text,
            retry_after=retry_after,
        )

    @property
    def target_url(self) -> str:
        """Where calls go now: ``base_url``, or the leader a standby named."""
        return self._target

    def _retry_wait(self, attempt: int, retry_after: float | None) -> float:
        """The server's Retry-After (else exponential from 0.5 s), capped, plus up to 25 %
        jitter so that many clients do not come back at the same instant."""
        base = retry_after if retry_after is not None else 0.5 * 2 ** (attempt - 1)
        base = min(base, self._max_retry_wait)
        return base + self._rng.uniform(0, 0.25 * base)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session


def _job_path(job_id: str) -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}"


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
