"""The heartbeat channel with the real daemon process and real agents (the node emulator runs
``rmd taskmanager`` for every pod): agents heartbeat over it, come back after a daemon
restart, fall back to HTTP heartbeats with a daemon that has no channel (an older rmd), and a
silent channel does not keep a TaskManager alive."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from rmd_dev.cluster import free_port
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.integration.daemon_harness import (
    TM_SELECTOR,
    RunningDaemon,
    agent_pid,
    daemon_argv,
    daemon_process,
    running_daemon,
)
from tests.support.waiting import eventually, within

pytestmark = pytest.mark.integration

HEARTBEAT_TIMEOUT = 10.0  # daemon_overrides' heartbeat.timeout (heartbeat.interval: 1 s)
REPO = Path(__file__).resolve().parents[2]


async def registered(daemon: RunningDaemon) -> set[str]:
    return {t["taskmanager_id"] for t in await daemon.taskmanagers() if t["state"] == "registered"}


async def stays_registered(daemon: RunningDaemon, names: set[str], *, seconds: float) -> None:
    """Every one of ``names`` stays registered (and none is lost) for ``seconds``: longer than
    the heartbeat timeout, so only heartbeats that arrive keep them."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        assert await registered(daemon) == names
        assert await daemon.metric("rmd_taskmanagers_lost_total") == 0
        await asyncio.sleep(1.0)  # the next look at an invariant, not a wait for a state


def ready_check(daemon: RunningDaemon) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        try:
            async with daemon.http.get(f"{daemon.url}/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    return ready


async def test_agents_heartbeat_over_the_channel_and_come_back_after_a_restart(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    cluster_id, port = f"flink-{secrets.token_hex(3)}", free_port()
    argv = daemon_argv(
        dev_cluster=dev_cluster,
        conf_dir=tmp_path,
        cluster_id=cluster_id,
        namespace=namespace,
        port=port,
    )
    log = tmp_path / "daemon.log"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        daemon = RunningDaemon(
            url=f"http://127.0.0.1:{port}",
            cluster_id=cluster_id,
            namespace=namespace,
            http=http,
            core=client.CoreV1Api(kube_api),
        )

        async def channels(count: int) -> bool:
            return await daemon.metric("rmd_heartbeat_channels") == count

        try:
            async with daemon_process(argv=argv, log=log) as first:
                await eventually(ready_check(daemon), timeout=30, what="first daemon ready")
                await daemon.put_requirement("job-a", 8)
                await daemon.wait_fulfilled("job-a")
                pods = await daemon.live_pod_names()
                assert len(pods) == 2
                await eventually(lambda: channels(2), timeout=30, what="both agents' channels")
                await stays_registered(daemon, pods, seconds=HEARTBEAT_TIMEOUT * 1.5)
                assert await channels(2)  # the whole time over the channel

                first.send_signal(signal.SIGTERM)
                code = await within(first.wait(), seconds=30, what="the first daemon to exit")
                assert code == 0, log.read_text()[-2000:]

            async with daemon_process(argv=argv, log=log):
                await eventually(ready_check(daemon), timeout=30, what="second daemon ready")

                async def back() -> bool:
                    return await registered(daemon) == pods and await channels(2)

                # closed on the first daemon's way out → HTTP heartbeat → 404 from the new one
                # → registered again → the channel again
                await eventually(back, timeout=60, what="agents registered again, on channels")
                await daemon.wait_fulfilled("job-a")
        finally:
            await daemon.core.delete_collection_namespaced_pod(
                namespace,
                label_selector=f"{TM_SELECTOR},app={cluster_id}",
                _request_timeout=REQUEST_TIMEOUT,
            )


def older_rmd(into: Path) -> Path:
    """The ``rmd`` package of the commit before the heartbeat channel was added, in ``into``."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
        ).stdout

    try:
        added = git("log", "--diff-filter=A", "--format=%H", "--", "rmd/api/heartbeat_channel.py")
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"no git history to take an older rmd from: {error}")
    commits = added.split()
    if not commits:
        pytest.skip("the commit adding the heartbeat channel is not in this clone's history")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", f"{commits[-1]}^", "rmd"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    assert not (into / "rmd/api/heartbeat_channel.py").exists()
    return into


async def test_with_a_daemon_without_the_channel_agents_heartbeat_over_http(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    tree = older_rmd(tmp_path / "older")
    cluster_id, port = f"flink-{secrets.token_hex(3)}", free_port()
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    argv = daemon_argv(
        dev_cluster=dev_cluster,
        conf_dir=conf_dir,
        cluster_id=cluster_id,
        namespace=namespace,
        port=port,
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        daemon = RunningDaemon(
            url=f"http://127.0.0.1:{port}",
            cluster_id=cluster_id,
            namespace=namespace,
            http=http,
            core=client.CoreV1Api(kube_api),
        )
        try:
            async with daemon_process(argv=argv, log=tmp_path / "daemon.log", tree=tree):
                await eventually(ready_check(daemon), timeout=30, what="older daemon ready")
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(
                        f"{daemon.url}/v1/taskmanagers/{cluster_id}-taskmanager-1-1/heartbeat-channel"
                    )
                assert refused.value.status == 404  # no such route: the older daemon
                await daemon.put_requirement("job-a", 4)
                await daemon.wait_fulfilled("job-a")
                pods = await daemon.live_pod_names()
                # only HTTP heartbeats can keep it registered past the heartbeat timeout
                await stays_registered(daemon, pods, seconds=HEARTBEAT_TIMEOUT * 1.5)
                assert "rmd_heartbeat_channels" not in await daemon.metrics()
        finally:
            await daemon.core.delete_collection_namespaced_pod(
                namespace,
                label_selector=f"{TM_SELECTOR},app={cluster_id}",
                _request_timeout=REQUEST_TIMEOUT,
            )


async def test_a_silent_channel_does_not_keep_its_taskmanager(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    extra = {"heartbeat.timeout": "3 s"}
    async with running_daemon(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace, extra=extra
    ) as daemon:
        await daemon.put_requirement("job-s", 4)
        view = await daemon.wait_fulfilled("job-s")
        victim = view["slots"][0]["taskmanager_id"]

        async def on_the_channel() -> bool:
            return await daemon.metric("rmd_heartbeat_channels") == 1

        await eventually(on_the_channel, timeout=30, what="the agent's channel")
        pid = await asyncio.to_thread(agent_pid, victim)
        assert pid is not None, f"no agent process found for {victim}"
        os.kill(pid, signal.SIGSTOP)  # its channel stays open, and silent
        try:

            async def given_up() -> bool:
                tms = {t["taskmanager_id"]: t for t in await daemon.taskmanagers()}
                return victim not in tms or tms[victim]["state"] == "releasing"

            await eventually(given_up, timeout=30, what="the silent TaskManager given up")
            lost = await daemon.metric("rmd_taskmanagers_lost_total", reason="heartbeat-timeout")
            assert lost == 1
            view = await daemon.wait_fulfilled("job-s")  # on a replacement
            assert victim not in {s["taskmanager_id"] for s in view["slots"]}
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
