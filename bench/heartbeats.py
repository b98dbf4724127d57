"""Heartbeat throughput: the daemon's HTTP app against a bare aiohttp handler, same run.

Each server runs as its own process (``python -m bench.heartbeats serve --kind rmd|bare``):
``rmd`` is the daemon's real application (:func:`rmd.api.app.create_app`, the real
:class:`~rmd.driver.DaemonEngine` and allocator with its timer task, the daemon's access
logger and logging at info) with ``--taskmanagers`` registered TaskManagers (pod creates
are answered at once: no Kubernetes here); ``bare`` is one aiohttp handler that reads the
body and answers a small JSON document — the HTTP stack alone. The load generator (this
process) keeps ``clients`` requests in flight over keep-alive connections and records each
latency; the figures to compare across machines are the ratios rmd / bare.

A kind ending in ``-channel`` (``rmd-channel``, ``bare-channel``) drives the same server over
the heartbeat channel instead (``/v1/taskmanagers/{id}/heartbeat-channel``: one WebSocket per
TaskManager, one text frame per heartbeat, no answer), open loop only: as no heartbeat is
answered, its figures are the server's CPU per heartbeat and RSS, not latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from bench.machine import busy_processes, machine_facts
from bench.procstat import CpuMeter, rss_bytes
from rmd_dev.cluster import free_port


@dataclass
class HeartbeatResult:
    kind: str
    clients: int
    seconds: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_percent: float
    # The server's CPU per answered request: steadier than requests/s on a busy machine
    # (where the load generator, sharing the cores, is often the limit).
    server_cpu_ms_per_request: float
    generator_cpu_percent: float


# ---------------------------------------------------------------------------- servers


class _AnsweredAtOnce:
    """Pod operations for a daemon without Kubernetes: every create and delete succeeds."""

    async def create(self, body: dict[str, Any]) -> None:
        return None

    async def delete(self, name: str, *, grace_period_seconds: int | None = None) -> None:
        return None


async def _rmd_app(taskmanagers: int) -> tuple[web.Application, list[asyncio.Task[None]]]:
    from rmd.api.app import create_app
    from rmd.core.allocator import Allocator, AllocatorSettings
    from rmd.core.clock import SystemClock
    from rmd.core.model import TaskManagerState
    from rmd.driver import DaemonEngine
    from rmd.metrics import RmdMetrics

    clock = SystemClock()
    settings = AllocatorSettings(
        cluster_id="hb",
        slots_per_taskmanager=1,
        # The bench's TaskManagers heartbeat only while measured: none is lost in between.
        heartbeat_timeout=24 * 3600.0,
    )
    allocator = Allocator(settings, clock=clock)
    metrics = RmdMetrics(registry=CollectorRegistry(), status=allocator.status)
    engine = DaemonEngine(
        allocator=allocator,
        pods=_AnsweredAtOnce(),
        build_pod=lambda *, pod_name: {"metadata": {"name": pod_name}},
        metrics=metrics,
        clock=clock,
    )
    engine.set_watch_synced_probe(lambda: True)
    engine.adopt([])
    engine.apply(allocator.declare("bench", taskmanagers))
    for number, view in enumerate(allocator.taskmanager_views()):
        if view.state is TaskManagerState.REQUESTED:
            engine.apply(allocator.create_succeeded(view.taskmanager_id))  # the pod exists
            address = f"10.{number // 65536}.{number // 256 % 256}.{number % 256}:6122"
            engine.apply(allocator.register(view.taskmanager_id, address=address, slots=1))
    timers = asyncio.create_task(engine.run_timers())
    return create_app(engine=engine, metrics=metrics), [timers]


def _bare_app(taskmanagers: int) -> web.Application:
    names = [f"hb-taskmanager-1-{index}" for index in range(1, taskmanagers + 1)]

    async def heartbeat(request: web.Request) -> web.Response:
        await request.read()
        name = request.match_info["taskmanager_id"]
        return web.json_response({"taskmanager_id": name, "state": "registered"})

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"taskmanagers": [{"taskmanager_id": n} for n in names]})

    async def channel(request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse()
        await websocket.prepare(request)
        async for _ in websocket:  # every frame read, none answered
            pass
        return websocket

    app = web.Application()
    app.router.add_put("/v1/taskmanagers/{taskmanager_id}/heartbeat", heartbeat)
    app.router.add_get("/v1/taskmanagers/{taskmanager_id}/heartbeat-channel", channel)
    app.router.add_get("/v1/taskmanagers", listing)
    return app


async def serve(kind: str, port: int, taskmanagers: int) -> None:
    from rmd.api.access_log import StructlogAccessLogger
    from rmd.api.server import ApiRunner
    from rmd.logs import configure_logging

    configure_logging(level="info")  # the daemon's default
    tasks: list[asyncio.Task[None]] = []
    runner: web.AppRunner
    if kind == "rmd":
        app, tasks = await _rmd_app(taskmanagers)
        # as the daemon serves it (rmd.daemon)
        runner = ApiRunner(app, access_log_class=StructlogAccessLogger, shutdown_timeout=5.0)
    else:
        runner = web.AppRunner(_bare_app(taskmanagers), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for task in tasks:
            task.cancel()
        await runner.cleanup()


# ---------------------------------------------------------------------------- servers as processes


@dataclass
class _Server:
    kind: str
    process: asyncio.subprocess.Process
    port: int
    names: list[str]  # the registered TaskManagers' ids

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def _server(kind: str, *, taskmanagers: int) -> AsyncIterator[_Server]:
    """``python -m bench.heartbeats serve`` as its own process (so /proc measures it alone).
    ``kind``: ``rmd`` or ``bare``, with ``+uvloop`` for that event loop, and ``@DIR`` to run
    it in DIR: a checkout whose ``rmd`` package is imported instead of this one (before and
    after on the same machine; DIR needs this ``bench`` package beside it)."""
    served, _, tree = kind.partition("@")
    app, _, loop = served.partition("+")
    app = app.removesuffix(CHANNEL_SUFFIX)
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.heartbeats",
        "serve",
        "--kind",
        app,
        "--loop",
        loop or "asyncio",
        "--port",
        str(port),
        "--taskmanagers",
        str(taskmanagers),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,  # the access log of the rmd server
        cwd=tree or None,  # python -m puts the working directory first on sys.path
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(120):
            line = await process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the {kind} heartbeat server did not start: {line!r}")
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/taskmanagers") as got:
            names = [tm["taskmanager_id"] for tm in (await got.json())["taskmanagers"]]
        yield _Server(kind, process, port, names)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()


CHANNEL_SUFFIX = "-channel"  # a kind driven over the heartbeat channel


def over_channel(kind: str) -> bool:
    """Whether ``kind`` (e.g. ``rmd-channel+uvloop@DIR``) is driven over the channel."""
    return kind.partition("@")[0].partition("+")[0].endswith(CHANNEL_SUFFIX)


# ---------------------------------------------------------------------------- closed loop


async def _closed_loop(url: str, names: list[str], *, clients: int, seconds: float) -> list[float]:
    """``clients`` requests in flight for ``seconds``; the latencies (s), errors as -1."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients)
    stop_at = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client(offset: int) -> None:
            index = offset
            while time.perf_counter() < stop_at:
                name = names[index % len(names)]
                index += clients
                began = time.perf_counter()
                try:
                    async with http.put(
                        f"{url}/v1/taskmanagers/{name}/heartbeat",
                        data=b"{}",
                        headers={"Content-Type": "application/json"},
                    ) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - began if ok else -1.0)

        await asyncio.gather(*(client(offset) for offset in range(clients)))
    return latencies


async def closed_loop(
    server: _Server, *, clients: int, seconds: float, warmup: float = 2.0
) -> HeartbeatResult:
    """Maximum throughput: ``clients`` requests always in flight (each waits for its answer
    before sending the next, so a slow server is offered less: closed loop)."""
    await _closed_loop(server.url, server.names, clients=clients, seconds=warmup)
    meter = CpuMeter({"server": server.process.pid, "generator": os.getpid()})
    meter.start()
    began = time.perf_counter()
    latencies = await _closed_loop(server.url, server.names, clients=clients, seconds=seconds)
    elapsed = time.perf_counter() - began
    cpu = meter.stop()
    ok = sorted(latency for latency in latencies if latency >= 0)
    return HeartbeatResult(
        kind=server.kind,
        clients=clients,
        seconds=round(elapsed, 2),
        requests=len(ok),
        errors=len(latencies) - len(ok),
        requests_per_s=round(len(ok) / elapsed, 1),
        p50_ms=_percentile_ms(ok, 0.5),
        p99_ms=_percentile_ms(ok, 0.99),
        server_cpu_percent=cpu["server"],
        server_cpu_ms_per_request=(
            round(10.0 * cpu["server"] * elapsed / len(ok), 4) if ok else -1.0
        ),
        generator_cpu_percent=cpu["generator"],
    )


async def measure(
    kind: str, *, taskmanagers: int, clients: int, seconds: float, warmup: float = 2.0
) -> HeartbeatResult:
    """One server of ``kind``, measured closed loop."""
    async with _server(kind, taskmanagers=taskmanagers) as server:
        return await closed_loop(server, clients=clients, seconds=seconds, warmup=warmup)


# ---------------------------------------------------------------------------- open loop


@dataclass
class OpenLoopResult:
    """Requests sent on a fixed schedule (``rate`` per second, whatever the answers do);
    each latency runs from the request's *scheduled* send time, so a request that waited
    (for its connection, for the generator, in the server's queue) counts its wait."""

    kind: str
    taskmanagers: int  # one keep-alive connection each, as every agent has its own
    rate: float  # offered requests/s
    seconds: float
    requests: int  # answered 200
    errors: int  # answered otherwise
    unanswered: int  # no answer within the drain time after the schedule ended
    answered_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    # How late the generator itself sent (its own floor of every latency above).
    generator_lag_p99_ms: float
    server_cpu_percent: float
    server_cpu_ms_per_request: float
    server_rss_mb: float
    generator_cpu_percent: float


class _Connection(asyncio.Protocol):
    """One TaskManager's keep-alive HTTP/1.1 connection: one request at a time; the next
    waits (with its scheduled time) until the answer to the previous one is in."""

    def __init__(self, on_answer: Callable[[float, int], None]) -> None:
        self._on_answer = on_answer
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiting: deque[tuple[float, bytes]] = deque()
        self._in_flight: float | None = None  # its scheduled time
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def send(self, scheduled: float, request: bytes) -> None:
        if self._in_flight is None:
            self._write(scheduled, request)
        else:
            self._waiting.append((scheduled, request))

    def _write(self, scheduled: float, request: bytes) -> None:
        assert self._transport is not None
        self._in_flight = scheduled
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buffer[:end])
            size = end + 4 + _content_length(head)
            if len(self._buffer) < size:
                return
            del self._buffer[:size]
            scheduled, self._in_flight = self._in_flight, None
            assert scheduled is not None, "an answer without a request"
            self._on_answer(scheduled, int(head[9:12]))
            if self._waiting:
                self._write(*self._waiting.popleft())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _heartbeat_request(name: str, port: int) -> bytes:
    return (
        f"PUT /v1/taskmanagers/{name}/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    ).encode()


@dataclass
class _Round:
    """What one open-loop run saw."""

    total: int
    latencies: list[float]
    lags: list[float]  # how late the generator sent each request
    errors: int = 0

    def __post_init__(self) -> None:
        self.done = asyncio.Event()

    def answered(self, scheduled: float, status: int) -> None:
        if status == 200:
            self.latencies.append(time.perf_counter() - scheduled)
        else:
            self.errors += 1
        if len(self.latencies) + self.errors >= self.total:
            self.done.set()


class _Fleet:
    """One keep-alive connection per TaskManager of the server, opened once."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._connections: list[_Connection] = []
        self._requests = [_heartbeat_request(name, server.port) for name in server.names]
        self._round: _Round | None = None

    async def __aenter__(self) -> _Fleet:
        loop = asyncio.get_running_loop()
        for _ in self._server.names:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._answered), "127.0.0.1", self._server.port
            )
            self._connections.append(connection)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for connection in self._connections:
            connection.close()

    def _answered(self, scheduled: float, status: int) -> None:
        if self._round is not None:
            self._round.answered(scheduled, status)

    async def run(self, *, rate: float, seconds: float, drain: float = 30.0) -> _Round:
        """Heartbeats at ``rate``/s for ``seconds``, TaskManager after TaskManager, each on
        its own connection; then up to ``drain`` seconds for the last answers."""
        if any(connection.closed for connection in self._connections):
            raise RuntimeError(f"the {self._server.kind} server closed a connection")
        count = len(self._connections)
        this = self._round = _Round(total=max(1, round(rate * seconds)), latencies=[], lags=[])
        start = time.perf_counter() + 0.01
        sent = 0
        while sent < this.total:
            now = time.perf_counter()
            due = min(this.total, int((now - start) * rate) + 1)
            while sent < due:
                scheduled = start + sent / rate
                this.lags.append(now - scheduled)
                self._connections[sent % count].send(scheduled, self._requests[sent % count])
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain):
                await this.done.wait()
        self._round = None
        return this


class _ChannelFleet:
    """One heartbeat channel (WebSocket) per TaskManager of the server, opened once."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._channels: list[aiohttp.ClientWebSocketResponse] = []

    async def __aenter__(self) -> _ChannelFleet:
        for name in self._server.names:
            self._channels.append(
                await self._http.ws_connect(
                    f"{self._server.url}/v1/taskmanagers/{name}/heartbeat-channel",
                    autoping=False,
                )
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for channel in self._channels:
            await channel.close()
        await self._http.close()

    async def run(self, *, rate: float, seconds: float) -> _Round:
        """Heartbeat frames at ``rate``/s for ``seconds``, TaskManager after TaskManager; then
        a ping on the last channels used, answered once the server has read their frames."""
        if any(channel.closed for channel in self._channels):
            raise RuntimeError(f"the {self._server.kind} server closed a channel")
        count = len(self._channels)
        this = _Round(total=max(1, round(rate * seconds)), latencies=[], lags=[])
        start = time.perf_counter() + 0.01
        sent = 0
        while sent < this.total:
            now = time.perf_counter()
            due = min(this.total, int((now - start) * rate) + 1)
            while sent < due:
                this.lags.append(now - start - sent / rate)
                await self._channels[sent % count].send_str("{}")
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
        last = [self._channels[(sent - 1 - back) % count] for back in range(min(count, 8))]
        async with asyncio.timeout(30):
            for channel in last:
                await channel.ping()
                message = await channel.receive()
                if message.type is not aiohttp.WSMsgType.PONG:
                    this.errors += 1
        return this


async def open_loop(
    server: _Server, *, rate: float, seconds: float, warmup: float = 2.0
) -> OpenLoopResult:
    """``rate`` heartbeats/s offered on a fixed schedule by one connection per TaskManager
    (server CPU counted over the schedule and the drain of its last answers)."""
    if over_channel(server.kind):
        return await _channel_open_loop(server, rate=rate, seconds=seconds, warmup=warmup)
    async with _Fleet(server) as fleet:
        await fleet.run(rate=rate, seconds=warmup)
        meter = CpuMeter({"server": server.process.pid, "generator": os.getpid()})
        meter.start()
        began = time.perf_counter()
        this = await fleet.run(rate=rate, seconds=seconds)
        elapsed = time.perf_counter() - began
        cpu = meter.stop()
    latencies = sorted(this.latencies)
    lags = sorted(this.lags)
    answered = len(latencies)
    return OpenLoopResult(
        kind=server.kind,
        taskmanagers=len(server.names),
        rate=rate,
        seconds=round(elapsed, 2),
        requests=answered,
        errors=this.errors,
        unanswered=this.total - answered - this.errors,
        answered_per_s=round(answered / elapsed, 1),
        p50_ms=_percentile_ms(latencies, 0.5),
        p99_ms=_percentile_ms(latencies, 0.99),
        p999_ms=_percentile_ms(latencies, 0.999),
        max_ms=_percentile_ms(latencies, 1.0),
        generator_lag_p99_ms=_percentile_ms(lags, 0.99),
        server_cpu_percent=cpu["server"],
        server_cpu_ms_per_request=(
            round(10.0 * cpu["server"] * elapsed / answered, 4) if answered else -1.0
        ),
        server_rss_mb=round(rss_bytes(server.process.pid) / (1024 * 1024), 1),
        generator_cpu_percent=cpu["generator"],
    )


async def _channel_open_loop(
    server: _Server, *, rate: float, seconds: float, warmup: float
) -> OpenLoopResult:
    """:func:`open_loop` over the heartbeat channel: no answers, so no latencies (-1); every
    frame sent counts as a heartbeat once the last channels' pings came back."""
    async with _ChannelFleet(server) as fleet:
        await fleet.run(rate=rate, seconds=warmup)
        meter = CpuMeter({"server": server.process.pid, "generator": os.getpid()})
        meter.start()
        began = time.perf_counter()
        this = await fleet.run(rate=rate, seconds=seconds)
        elapsed = time.perf_counter() - began
        cpu = meter.stop()
        rss = rss_bytes(server.process.pid)
    lags = sorted(this.lags)
    return OpenLoopResult(
        kind=server.kind,
        taskmanagers=len(server.names),
        rate=rate,
        seconds=round(elapsed, 2),
        requests=this.total,
        errors=this.errors,
        unanswered=0,
        answered_per_s=round(this.total / elapsed, 1),
        p50_ms=-1.0,
        p99_ms=-1.0,
        p999_ms=-1.0,
        max_ms=-1.0,
        generator_lag_p99_ms=_percentile_ms(lags, 0.99),
        server_cpu_percent=cpu["server"],
        server_cpu_ms_per_request=round(10.0 * cpu["server"] * elapsed / this.total, 4),
        server_rss_mb=round(rss / (1024 * 1024), 1),
        generator_cpu_percent=cpu["generator"],
    )


def _percentile_ms(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return -1.0
    return round(1000 * ordered[int(fraction * (len(ordered) - 1))], 2)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def _rates(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


async def run_all(
    *,
    kinds: Sequence[str] = ("bare", "rmd"),
    taskmanagers: int,
    clients: int,
    seconds: float,
    rates: Sequence[float],
) -> dict[str, Any]:
    """Every server up at once; each measurement runs on each server back to back (so the
    machine's other work falls on all alike): closed loop at ``clients`` (0: none), then
    open loop at every rate of ``rates``."""
    report: dict[str, Any] = {
        "machine": machine_facts(),
        "busy_before": await asyncio.to_thread(busy_processes),
        "taskmanagers": taskmanagers,
        "closed": {},
        "open": [],
    }
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(_server(kind, taskmanagers=taskmanagers))
            for kind in kinds
        ]
        if clients > 0:
            for server in servers:
                if over_channel(server.kind):
                    continue  # no answers to wait for: open loop only
                result = await closed_loop(server, clients=clients, seconds=seconds)
                report["closed"][server.kind] = asdict(result)
        for rate in rates:
            row: dict[str, Any] = {"rate": rate}
            for server in servers:
                row[server.kind] = asdict(await open_loop(server, rate=rate, seconds=seconds))
            report["open"].append(row)
    report["busy_after"] = await asyncio.to_thread(busy_processes)
    report["load_average_after"] = machine_facts()["load_average"]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.heartbeats", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serving = sub.add_parser("serve", help="run one heartbeat server (used by the bench)")
    serving.add_argument("--kind", choices=("rmd", "bare"), required=True)
    serving.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--taskmanagers", type=int, default=1000)
    running = sub.add_parser("run", help="measure both servers and print the figures")
    running.add_argument("--taskmanagers", type=int, default=1000)
    running.add_argument("--clients", type=int, default=50, help="closed loop (0: none)")
    running.add_argument("--seconds", type=float, default=10.0)
    running.add_argument(
        "--rates", type=_rates, default=(2000.0, 3000.0), help="open-loop rates, e.g. 2000,3000"
    )
    running.add_argument(
        "--kinds",
        type=lambda text: tuple(text.split(",")),
        default=("bare", "rmd"),
        help="servers: bare, rmd, bare+uvloop, rmd+uvloop; -channel (rmd-channel, "
        "bare-channel): driven over the heartbeat channel; @DIR: served from another checkout",
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        with (
            contextlib.suppress(KeyboardInterrupt),
            asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner,
        ):
            runner.run(serve(args.kind, args.port, args.taskmanagers))
        return 0
    report = asyncio.run(
        run_all(
            kinds=args.kinds,
            taskmanagers=args.taskmanagers,
            clients=args.clients,
            seconds=args.seconds,
            rates=args.rates,
        )
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
