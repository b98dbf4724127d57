"""A reverse proxy in front of the API server that injects faults on demand.

Plain HTTP on 127.0.0.1 downstream, TLS (verified with the cluster CA) upstream; responses
are streamed, so watches work through it. Faults are programmed per method and path::

    async with FaultProxy(upstream=server, ca_file=ca) as proxy:
        proxy.inject(method="POST", path_regex=r"/pods$", status=429, retry_after=1, times=2)
        proxy.drop_watches()          # cut every open watch connection
        proxy.requests                # what passed through: method, path, status, time

An injected fault answers with a Kubernetes ``Status`` body, as the API server would;
``status=0`` closes the connection without answering (a connection error for the client);
``status=None`` forwards the request after all (with ``gate``/``delay``: a slow API server);
``in_stream=True`` answers a watch with 200 and an in-stream ``ERROR`` event, byte for byte
what the API server sends (e.g. 410 "too old resource version"); ``silent=True`` answers it
with 200 and its headers, then sends not a byte (a watch gone silent without closing).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "AlreadyExists",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class Fault:
    """One programmed fault; ``times=None`` fires forever. ``hits`` counts firings."""

    method: str | None
    path_regex: re.Pattern[str]
    status: int | None
    retry_after: float | None
    times: int | None
    message: str
    delay: float
    watch_only: bool
    gate: asyncio.Event | None = None  # answer only once this is set
    query_regex: re.Pattern[str] | None = None
    in_stream: bool = False
    silent: bool = False  # 200 and headers, then nothing until ``gate`` (if any) is set
    forward_first: bool = False  # the API server gets the request; the client the fault
    hits: int = 0

    def matches(self, *, method: str, path: str, query: str, is_watch: bool) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.watch_only and not is_watch:
            return False
        if self.query_regex is not None and self.query_regex.search(query) is None:
            return False
        return self.path_regex.search(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass(frozen=True)
class ProxiedRequest:
    """One request as the proxy saw it. ``at``: time.monotonic() when it arrived."""

    method: str
    path: str
    query: str
    status: int  # what the client got; 0 = connection closed without an answer
    at: float
    injected: bool
    is_watch: bool


@dataclass
class _OpenWatch:
    request: web.Request
    upstream: aiohttp.ClientResponse
    dropped: bool = field(default=False)


class FaultProxy:
    """See the module docstring. Use as an async context manager."""

    def __init__(
        self,
        *,
        upstream: str,
        ca_file: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._upstream = upstream.rstrip("/")
        self._ca_file = str(ca_file) if ca_file is not None else None
        self._host = host
        self._port = port
        self._faults: list[Fault] = []
        self._watches: dict[int, _OpenWatch] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._bound_port = 0
        self.requests: list[ProxiedRequest] = []

    # ------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        ssl_context: ssl.SSLContext | bool
        if self._upstream.startswith("https://"):
            ssl_context = ssl.create_default_context(cafile=self._ca_file)
        else:
            ssl_context = False
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._bound_port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._bound_port}"

    def configuration(self, *, token: str) -> client.Configuration:
        """A kubernetes_asyncio Configuration that talks through this proxy with ``token``."""
        cfg = client.Configuration()
        cfg.host = self.url
        cfg.api_key = {"BearerToken": token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        return cfg

    # ------------------------------------------------------------------ fault plan

    def inject(
        self,
        *,
        path_regex: str,
        status: int | None,
        method: str | None = None,
        retry_after: float | None = None,
        times: int | None = 1,
        message: str | None = None,
        delay: float = 0.0,
        watch_only: bool = False,
        forward_first: bool = False,
        gate: asyncio.Event | None = None,
        query_regex: str | None = None,
        in_stream: bool = False,
        silent: bool = False,
    ) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` instead of forwarding.

        ``path_regex`` is searched in the URL path (no query). ``watch_only`` limits the
        fault to watch requests (``?watch=true``). ``delay`` waits before answering.
        ``status=0`` closes the connection without an answer. ``forward_first`` sends the
        request to the API server anyway and throws its answer away (a lost response: the
        change happened, the client does not know). ``gate``: hold the matching request
        until the event is set (a hanging API server), then answer. ``query_regex`` must
        also match the query string. See the module docstring for ``status=None``,
        ``in_stream`` and ``silent`` (with ``gate``: silent until it is set).
        """
        fault = Fault(
            method=method,
            path_regex=re.compile(path_regex),
            status=status,
            retry_after=retry_after,
            times=times,
            message=message or f"injected by the fault proxy: {status}",
            delay=delay,
            watch_only=watch_only,
            forward_first=forward_first,
            gate=gate,
            query_regex=re.compile(query_regex) if query_regex is not None else None,
            in_stream=in_stream,
            silent=silent,
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def drop_watches(self) -> int:
        """Cut every open watch connection (both sides); returns how many were cut."""
        dropped = 0
        for entry in list(self._watches.values()):
            if entry.dropped:
                continue
            entry.dropped = True
            entry.upstream.close()
            transport = entry.request.transport
            if transport is not None:
                transport.close()
            dropped += 1
        return dropped

    @property
    def open_watches(self) -> int:
        return sum(1 for entry in self._watches.values() if not entry.dropped)

    def requests_matching(
        self, *, method: str | None = None, path_regex: str | None = None
    ) -> list[ProxiedRequest]:
        pattern = re.compile(path_regex) if path_regex is not None else None
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.search(r.path))
        ]

    # ------------------------------------------------------------------ handling

    def _take_fault(self, *, method: str, path: str, query: str, is_watch: bool) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method=method, path=path, query=query, is_watch=is_watch):
                fault.hits += 1
                return fault
        return None

    def _record(
        self, request: web.Request, *, status: int, at: float, injected: bool, is_watch: bool
    ) -> None:
        self.requests.append(
            ProxiedRequest(
                method=request.method,
                path=request.path,
                query=request.query_string,
                status=status,
                at=at,
                injected=injected,
                is_watch=is_watch,
            )
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        is_watch = request.query.get("watch", "").lower() in ("true", "1")
        fault = self._take_fault(
            method=request.method, path=request.path, query=request.query_string, is_watch=is_watch
        )
        if fault is not None:
            return await self._answer_fault(request, fault, arrived=arrived, is_watch=is_watch)
        return await self._forward(request, arrived=arrived, is_watch=is_watch)

    async def _answer_fault(
        self, request: web.Request, fault: Fault, *, arrived: float, is_watch: bool
    ) -> web.StreamResponse:
        if fault.silent:
            self._record(request, status=200, at=arrived, injected=True, is_watch=is_watch)
            silent = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await silent.prepare(request)
            await (fault.gate or asyncio.Event()).wait()
            return silent
        if fault.gate is not None:
            await fault.gate.wait()
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            return await self._forward(request, arrived=arrived, is_watch=is_watch)
        request_body = await request.read()
        if fault.forward_first:
            assert self._session is not None, "FaultProxy is not started"
            forwarded = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
            async with self._session.request(
                request.method,
                self._upstream + request.rel_url.raw_path_qs,
                headers=forwarded,
                data=request_body or None,
                allow_redirects=False,
            ) as upstream:
                await upstream.read()
        if fault.status == 0:
            self._record(request, status=0, at=arrived, injected=True, is_watch=is_watch)
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("fault proxy: connection closed on purpose")
        reason = _REASONS.get(fault.status, "Unknown")
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": fault.message,
            "reason": reason,
            "code": fault.status,
        }
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            body["details"] = {"retryAfterSeconds": int(fault.retry_after)}
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.in_stream:
            self._record(request, status=200, at=arrived, injected=True, is_watch=is_watch)
            line = json.dumps({"type": "ERROR", "object": body}) + "\n"
            return web.Response(status=200, text=line, content_type="application/json")
        self._record(request, status=fault.status, at=arrived, injected=True, is_watch=is_watch)
        return web.Response(
            status=fault.status,
            text=json.dumps(body),
            content_type="application/json",
            headers=headers,
        )

    async def _forward(
        self, request: web.Request, *, arrived: float, is_watch: bool
    ) -> web.StreamResponse:
        assert self._session is not None, "FaultProxy is not started"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        upstream_url = self._upstream + request.rel_url.raw_path_qs
        try:
            upstream = await self._session.request(
                request.method,
                upstream_url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._record(request, status=502, at=arrived, injected=False, is_watch=is_watch)
            return web.Response(status=502, text=f"fault proxy: upstream failed: {exc}")
        self._record(request, status=upstream.status, at=arrived, injected=False, is_watch=is_watch)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                response.headers.add(key, value)
        entry = _OpenWatch(request=request, upstream=upstream)
        watch_key = id(entry)
        if is_watch:
            self._watches[watch_key] = entry
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except (aiohttp.ClientError, ConnectionError):
            if not entry.dropped:
                raise
        finally:
            self._watches.pop(watch_key, None)
            upstream.release()
        return response
