"""Scale-out benchmark: rmd against the bare-API floor, measured in the same run.

Floor: create N TaskManager pods straight through the API (the same manifests, the same
parallelism) and wait until the node emulator reports all of them Running. rmd: declare
N x slots through the daemon's HTTP API and wait until the job is fulfilled — pods created,
running, their agents registered, every slot allocated. Both use in-process agents
(``emulator.rmd.dev/run: coroutine``) so hundreds of pods fit on a small machine.

    python -m bench.scale_out [--pods 50] [--rounds 2]

Prints the figures and the ratio rmd / floor; the ratio is what to compare across changes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch

from rmd.config.flinkconf import FlinkConfiguration
from rmd.config.settings import RmdSettings
from rmd.daemon import load_daemon_config, serve
from rmd.kube.podspec import TaskManagerPodFactory
from rmd.logs import configure_logging
from rmd_dev.cluster import ControlPlane, free_port
from rmd_dev.interrupt import SIGTERM_EXIT_CODE, run_cancellable

SLOTS = 2
TIMEOUT = (5, 60)


def overrides(*, cluster_id: str, namespace: str, port: int) -> list[str]:
    values = {
        "kubernetes.cluster-id": cluster_id,
        "kubernetes.namespace": namespace,
        "taskmanager.numberOfTaskSlots": str(SLOTS),
        "taskmanager.memory.process.size": "64m",
        "kubernetes.taskmanager.cpu": "0.01",
        "rmd.rest.address": "127.0.0.1",
        "rmd.rest.port": str(port),
        "rmd.taskmanager.resourcemanager-url": f"http://127.0.0.1:{port}",
        "rmd.taskmanager.supervise-flink": "false",
        "kubernetes.taskmanager.annotations": "emulator.rmd.dev/run:coroutine,"
        "emulator.rmd.dev/workload:rmd-agent",
        "heartbeat.interval": "5 s",
        "rmd.log.level": "warning",
    }
    return [f"{k}={v}" for k, v in values.items()]


async def wait_running(core: client.CoreV1Api, namespace: str, selector: str, n: int) -> None:
    running: set[str] = set()
    listed = await core.list_namespaced_pod(
        namespace, label_selector=selector, _request_timeout=TIMEOUT
    )
    running |= {p.metadata.name for p in listed.items if p.status.phase == "Running"}
    rv = listed.metadata.resource_version
    async with watch.Watch() as w:
        while len(running) < n:
            async for event in w.stream(
                core.list_namespaced_pod,
                namespace,
                label_selector=selector,
                resource_version=rv,
                timeout_seconds=60,
                _request_timeout=(5, 90),
            ):
                pod = event["object"]
                rv = pod.metadata.resource_version
                if pod.status.phase == "Running":
                    running.add(pod.metadata.name)
                if len(running) >= n:
                    break


async def delete_all(core: client.CoreV1Api, namespace: str, selector: str) -> None:
    await core.delete_collection_namespaced_pod(
        namespace, label_selector=selector, _request_timeout=TIMEOUT
    )
    while True:  # a benchmark's clean-up, not a test: polling the API is fine here
        left = await core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=TIMEOUT
        )
        if not left.items:
            return
        await asyncio.sleep(0.2)


async def floor_round(
    api: client.ApiClient, namespace: str, n: int, tag: str
) -> tuple[float, float]:
    """(all creates answered, all pods Running) in seconds."""
    cluster_id = f"floor-{tag}"
    conf = FlinkConfiguration(
        dict(
            o.split("=", 1)
            for o in overrides(cluster_id=cluster_id, namespace=namespace, port=8090)
        )
    )
    factory = TaskManagerPodFactory.from_configuration(conf, RmdSettings.from_configuration(conf))
    core = client.CoreV1Api(api)
    selector = f"app={cluster_id}"
    gate = asyncio.Semaphore(8)  # the daemon's default rmd.kubernetes.max-parallel-requests

    async def create(i: int) -> None:
        body: Any = factory.build(pod_name=f"{cluster_id}-taskmanager-1-{i}", owner=None)
        async with gate:
            await core.create_namespaced_pod(namespace, body=body, _request_timeout=TIMEOUT)

    began = time.perf_counter()
    await asyncio.gather(*(create(i) for i in range(1, n + 1)))
    created = time.perf_counter() - began
    await wait_running(core, namespace, selector, n)
    running = time.perf_counter() - began
    await delete_all(core, namespace, selector)
    return created, running


async def rmd_round(
    kubeconfig: Path, api: client.ApiClient, namespace: str, n: int, tag: str
) -> float:
    cluster_id = f"rmd-{tag}"
    port = free_port()
    cfg = load_daemon_config(
        conf_dir=Path(tempfile.mkdtemp(prefix="rmd-conf-")),  # only the overrides count
        overrides=overrides(cluster_id=cluster_id, namespace=namespace, port=port),
    )
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(
        serve(cfg, stop=stop, kubeconfig=kubeconfig, on_started=lambda _p: started.set())
    )
    await asyncio.wait_for(started.wait(), 30)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.05)
            began = time.perf_counter()
            async with http.put(
                f"{url}/v1/jobs/bench/requirements", json={"slots": n * SLOTS}
            ) as resp:
                resp.raise_for_status()
            while True:
                async with http.get(f"{url}/v1/jobs/bench?wait=60") as resp:
                    view = await resp.json()
                if view["fulfilled"]:
                    break
            return time.perf_counter() - began
    finally:
        stop.set()
        await task
        await delete_all(client.CoreV1Api(api), namespace, f"app={cluster_id}")


async def run(pods: int, rounds: int, cluster_dir: Path | None) -> int:
    own = cluster_dir is None
    directory = cluster_dir or Path(tempfile.mkdtemp(prefix="rmd-bench-"))
    plane = ControlPlane(directory)
    state = plane.status() if not own else await asyncio.to_thread(plane.up, nodes=4)
    if state is None:
        print(f"no cluster in {directory}", file=sys.stderr)
        return 1
    kubeconfig = Path(state.kubeconfig)
    try:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            core = client.CoreV1Api(api)
            namespace = f"bench-{int(time.time())}"
            await core.create_namespace(
                body={"metadata": {"name": namespace}},  # type: ignore[arg-type]
                _request_timeout=TIMEOUT,
            )
            while True:
                with contextlib.suppress(client.ApiException):
                    await core.read_namespaced_service_account(
                        "default", namespace, _request_timeout=TIMEOUT
                    )
                    break
                await asyncio.sleep(0.1)
            creates: list[float] = []
            runs: list[float] = []
            rmds: list[float] = []
            for r in range(rounds):
                created, running = await floor_round(api, namespace, pods, f"{r}")
                creates.append(created)
                runs.append(running)
                rmds.append(await rmd_round(kubeconfig, api, namespace, pods, f"{r}"))
                print(
                    f"round {r + 1}: creates {created:.2f} s, running {running:.2f} s, "
                    f"rmd {rmds[-1]:.2f} s",
                    flush=True,
                )
            create_floor = statistics.median(creates)
            run_floor = statistics.median(runs)
            ours = statistics.median(rmds)
            print(f"\nscale-out of {pods} TaskManagers ({pods * SLOTS} slots), median of {rounds}:")
            for label, value in (
                ("bare API: all creates answered", create_floor),
                ("bare API: all pods Running", run_floor),
                ("rmd: declare -> every slot allocated", ours),
            ):
                print(f"  {label:<40}{value:7.2f} s  {pods / value:7.1f} pods/s")
            print(f"  ratio rmd / creates answered            {ours / create_floor:7.2f}")
            print(f"  ratio rmd / pods Running                {ours / run_floor:7.2f}")
            await core.delete_namespace(namespace, _request_timeout=TIMEOUT)
    finally:
        if own:
            await asyncio.to_thread(plane.down)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.scale_out", description=__doc__)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--cluster-dir",
        type=Path,
        default=None,
        help="use a running dev cluster instead of starting one",
    )
    args = parser.parse_args(argv)
    configure_logging(level="warning")
    code = run_cancellable(run(args.pods, args.rounds, args.cluster_dir))
    return SIGTERM_EXIT_CODE if code is None else code


if __name__ == "__main__":
    raise SystemExit(main())
