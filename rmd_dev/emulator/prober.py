"""Running one container's readiness probe, as the kubelet's prober worker does.

An HTTP probe succeeds on a status from 200 to 399 within ``timeoutSeconds`` (redirects
followed, TLS not verified, ``User-Agent: kube-probe/1.20``, no keep-alive); a TCP probe
when the connection opens in time. Outcomes are counted by
:class:`rmd_dev.emulator.probes.ProbeResults`; ``on_change(ready)`` hears each flip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
import structlog

from rmd_dev.emulator.probes import ProbeResults, ProbeSpec

log = structlog.get_logger(__name__)

USER_AGENT = "kube-probe/1.20"


async def probe_once(spec: ProbeSpec, *, session: aiohttp.ClientSession) -> bool:
    """One probe: True on success."""
    try:
        async with asyncio.timeout(spec.timeout):
            if spec.kind == "tcp":
                _, writer = await asyncio.open_connection(spec.host, spec.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True
            headers = {"User-Agent": USER_AGENT, **dict(spec.headers)}
            async with session.get(spec.url, headers=headers, ssl=False) as response:
                return 200 <= response.status < 400
    except (TimeoutError, OSError, aiohttp.ClientError):
        return False


async def run_readiness_probe(
    spec: ProbeSpec, *, on_change: Callable[[bool], Awaitable[None]]
) -> None:
    """Probe every ``period`` after ``initial_delay`` until cancelled."""
    results = ProbeResults(
        success_threshold=spec.success_threshold, failure_threshold=spec.failure_threshold
    )
    await asyncio.sleep(spec.initial_delay)
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            success = await probe_once(spec, session=session)
            if results.record(success):
                log.info("emulator_readiness_changed", probe=spec.describe(), ready=results.ready)
                await on_change(results.ready)
            next_at += spec.period  # a ticker, as the kubelet's: a slow probe does not drift
            await asyncio.sleep(max(0.0, next_at - loop.time()))
