"""Heartbeat throughput: the daemon's HTTP app against a bare aiohttp handler, same run.

Each server runs as its own process (``python -m bench.heartbeats serve --kind rmd|bare``):
``rmd`` is the daemon's real application (:func:`rmd.api.app.create_app`, the real
:class:`~rmd.driver.DaemonEngine` and allocator with its timer task, the daemon's access
logger and logging at info) with ``--taskmanagers`` registered TaskManagers (pod creates
are answered at once: no Kubernetes here); ``bare`` is one aiohttp handler that reads the
body and answers a small JSON document — the HTTP stack alone. The load generator (this
process) keeps ``clients`` requests in flight over keep-alive connections and records each
latency; the figures to compare across machines are the ratios rmd / bare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from bench.procstat import CpuMeter
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
    allocator = Allocator(AllocatorSettings(cluster_id="hb", slots_per_taskmanager=1), clock=clock)
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

    app = web.Application()
    app.router.add_put("/v1/taskmanagers/{taskmanager_id}/heartbeat", heartbeat)
    app.router.add_get("/v1/taskmanagers", listing)
    return app


async def serve(kind: str, port: int, taskmanagers: int) -> None:
    from rmd.api.access_log import StructlogAccessLogger
    from rmd.logs import configure_logging

    configure_logging(level="info")  # the daemon's default
    tasks: list[asyncio.Task[None]] = []
    if kind == "rmd":
        app, tasks = await _rmd_app(taskmanagers)
        runner = web.AppRunner(app, access_log_class=StructlogAccessLogger)
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


# ---------------------------------------------------------------------------- load


async def _load(url: str, names: list[str], *, clients: int, seconds: float) -> list[float]:
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


async def measure(
    kind: str, *, taskmanagers: int, clients: int, seconds: float, warmup: float = 2.0
) -> HeartbeatResult:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.heartbeats",
        "serve",
        "--kind",
        kind,
        "--port",
        str(port),
        "--taskmanagers",
        str(taskmanagers),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,  # the access log of the rmd server
    )
    try:
        assert server.stdout is not None
        async with asyncio.timeout(120):
            line = await server.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the {kind} heartbeat server did not start: {line!r}")
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/taskmanagers") as got:
            names = [tm["taskmanager_id"] for tm in (await got.json())["taskmanagers"]]
        await _load(url, names, clients=clients, seconds=warmup)
        meter = CpuMeter({"server": server.pid, "generator": _own_pid()})
        meter.start()
        began = time.perf_counter()
        latencies = await _load(url, names, clients=clients, seconds=seconds)
        elapsed = time.perf_counter() - began
        cpu = meter.stop()
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.terminate()
        await server.wait()
    ok = sorted(latency for latency in latencies if latency >= 0)
    return HeartbeatResult(
        kind=kind,
        clients=clients,
        seconds=round(elapsed, 2),
        requests=len(ok),
        errors=len(latencies) - len(ok),
        requests_per_s=round(len(ok) / elapsed, 1),
        p50_ms=round(1000 * statistics.median(ok), 2) if ok else -1.0,
        p99_ms=round(1000 * ok[int(0.99 * (len(ok) - 1))], 2) if ok else -1.0,
        server_cpu_percent=cpu["server"],
        server_cpu_ms_per_request=(
            round(10.0 * cpu["server"] * elapsed / len(ok), 4) if ok else -1.0
        ),
        generator_cpu_percent=cpu["generator"],
    )


def _own_pid() -> int:
    import os

    return os.getpid()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.heartbeats", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serving = sub.add_parser("serve", help="run one heartbeat server (used by the bench)")
    serving.add_argument("--kind", choices=("rmd", "bare"), required=True)
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--taskmanagers", type=int, default=1000)
    running = sub.add_parser("run", help="measure both servers and print the figures")
    running.add_argument("--taskmanagers", type=int, default=1000)
    running.add_argument("--clients", type=int, default=50)
    running.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.kind, args.port, args.taskmanagers))
        return 0

    async def both() -> list[HeartbeatResult]:
        return [
            await measure(
                kind, taskmanagers=args.taskmanagers, clients=args.clients, seconds=args.seconds
            )
            for kind in ("bare", "rmd")
        ]

    for result in asyncio.run(both()):
        print(json.dumps(result.__dict__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
