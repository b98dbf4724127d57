"""Real Prometheus for the tests: Debian's ``promtool`` and ``prometheus`` (installed by
``make provision``), the server as a local process on a free loopback port.

    check = promtool_check_metrics(text)          # promtool's verdict on an exposition
    async with running_prometheus(config, workdir=tmp_path) as prometheus:
        await prometheus.query("rmd_task_slots")  # the HTTP API's /api/v1/query
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from rmd_dev.cluster import free_port
from tests.support.waiting import eventually, within

STOP_TIMEOUT = 15.0


def tool(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``; the test fails (never skips) without it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: run `make provision` (Debian's prometheus package)",
            pytrace=False,
        )
    return found


def promtool_check_metrics(exposition: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on a text exposition (its stdin); exit 0 and no output
    mean every name, type and help text passed its lint."""
    return subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class PrometheusServer:
    url: str
    http: aiohttp.ClientSession
    log_path: Path

    async def api(self, path: str, **params: str) -> dict[str, Any]:
        """The ``data`` of a successful HTTP API answer; an AssertionError otherwise."""
        async with self.http.get(f"{self.url}{path}", params=params) as response:
            body: dict[str, Any] = await response.json(content_type=None)
        assert body.get("status") == "success", f"{path} {params}: {body}"
        data: dict[str, Any] = body["data"]
        return data

    async def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = await self.api("/api/v1/query", query=expression)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def query_error(self, expression: str) -> str | None:
        """None when ``expression`` parses and evaluates; else Prometheus's error text."""
        async with self.http.get(
            f"{self.url}/api/v1/query", params={"query": expression}
        ) as response:
            body: dict[str, Any] = await response.json(content_type=None)
        return None if body.get("status") == "success" else str(body.get("error"))

    async def active_targets(self) -> list[dict[str, Any]]:
        data = await self.api("/api/v1/targets", state="active")
        targets: list[dict[str, Any]] = data["activeTargets"]
        return targets


def write_checked_config(config: dict[str, Any], *, workdir: Path) -> Path:
    """``workdir/prometheus.yml``, which ``promtool check config`` accepted."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    check = subprocess.run(
        [tool("promtool"), "check", "config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, f"promtool check config: {check.stdout}{check.stderr}"
    return config_path


@contextlib.asynccontextmanager
async def running_prometheus(
    config: dict[str, Any], *, workdir: Path
) -> AsyncIterator[PrometheusServer]:
    """Prometheus with ``config`` (its YAML as a dict) until the block ends; its data and log
    in ``workdir``. Stopped with SIGTERM (then SIGKILL) and awaited: nothing is left."""
    config_path = await asyncio.to_thread(write_checked_config, config, workdir=workdir)
    address = f"127.0.0.1:{free_port()}"
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            tool("prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={address}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            server = PrometheusServer(url=f"http://{address}", http=http, log_path=log_path)

            async def ready() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"prometheus exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{server.url}/-/ready") as response:
                        return response.status == 200
                return False

            await eventually(ready, timeout=30, what="Prometheus /-/ready")
            yield server
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await within(process.wait(), seconds=STOP_TIMEOUT, what="Prometheus to stop")
            except AssertionError:
                process.kill()
                await process.wait()
