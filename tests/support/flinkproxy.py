"""A loopback HTTP proxy in front of a Flink JobManager's REST API, for outages and bad answers.

Point ``rmd.flink.rest-url`` at :attr:`FlinkRestProxy.url` and the daemon reads Flink through
it; the tests talk to Flink directly. The port is fixed when the proxy is made, so the
daemon's configuration can name it before Flink (the upstream) has a port::

    proxy = FlinkRestProxy()
    await proxy.start()
    ...                                  # write the configuration with proxy.url
    proxy.upstream = "http://127.0.0.1:8081"
    await proxy.stop()                   # the REST API is down: connections are refused
    await proxy.start()                  # ... and back, on the same port
    proxy.rewrite(path_regex=r"^/jobs/overview$", transform=lambda body: "not json")

A rewrite replaces the body of every answer whose path matches: ``transform`` gets the
upstream's JSON and returns the JSON to send instead, or a ``str`` sent as it is (e.g. a body
that is not JSON). ``requests`` counts what passed, by path.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from rmd_dev.cluster import free_port

__all__ = ["FlinkRestProxy", "Rewrite"]


@dataclass
class Rewrite:
    path_regex: re.Pattern[str]
    transform: Callable[[Any], Any]
    hits: int = 0


class FlinkRestProxy:
    def __init__(self, *, port: int | None = None, upstream: str | None = None) -> None:
        self.port = port or free_port()
        self.upstream = upstream
        self.requests: Counter[str] = Counter()
        self._rewrites: list[Rewrite] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def serving(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen (again) on the proxy's port."""
        if self._runner is not None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner

    async def stop(self) -> None:
        """Close the port and every open connection: clients get 'connection refused'."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def close(self) -> None:
        await self.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FlinkRestProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def rewrite(self, *, path_regex: str, transform: Callable[[Any], Any]) -> Rewrite:
        rule = Rewrite(re.compile(path_regex), transform)
        self._rewrites.append(rule)
        return rule

    def clear_rewrites(self) -> None:
        self._rewrites.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[request.path] += 1
        if self.upstream is None or self._session is None:
            return web.Response(status=502, text="flink proxy: no upstream yet")
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream.rstrip("/") + request.rel_url.raw_path_qs,
            data=body or None,
            headers={"Content-Type": request.content_type} if body else None,
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
        for rule in self._rewrites:
            if rule.path_regex.search(request.path):
                rule.hits += 1
                replaced = rule.transform(json.loads(payload))
                text = replaced if isinstance(replaced, str) else json.dumps(replaced)
                return web.Response(status=status, text=text, content_type="application/json")
        return web.Response(status=status, body=payload, content_type="application/json")
