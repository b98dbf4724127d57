"""``make demo-sim``: the quick simulated story on the embedded local control plane (no Flink).

``make demo`` (:mod:`rmd_dev.demo`) plays the real story with Flink's JobManager and real
TaskManagers. This one starts a real control plane with emulated nodes, a JobManager
Deployment (the owner of every TaskManager pod), the daemon as a separate process, and
TaskManager pods that run only rmd's agent (no Flink), and then plays a JobMaster over rmd's
HTTP API:

1. job A declares 8 slots (4 per TaskManager) → 2 pods → registered → fulfilled;
2. job B declares 4 slots → 1 more pod → fulfilled;
3. one of B's TaskManager pods is deleted with kubectl → a replacement registers, B is whole;
4. job A finishes (DELETE) → its TaskManagers are released after the idle timeout.

Each step is printed as it happens; a summary table and key metrics close the run. The exit
code is 0 only if every step happened. Everything it started is stopped and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from rmd_dev.cluster import ClusterError, ControlPlane, free_port
from rmd_dev.interrupt import SIGTERM_EXIT_CODE, run_cancellable
from rmd_dev.kubectl import kubectl

NAMESPACE = "rmd-demo"
CLUSTER_ID = "flink-demo"
SLOTS_PER_TM = 4
IDLE_TIMEOUT = 5.0
STEP_TIMEOUT = 90.0


@dataclass
class Step:
    name: str
    ok: bool = False
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Demo:
    started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)


def jobmanager_deployment() -> str:
    """A JobManager Deployment with no replicas: it only owns the TaskManager pods here."""
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": CLUSTER_ID, "namespace": NAMESPACE},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": CLUSTER_ID, "component": "jobmanager"}},
                "template": {
                    "metadata": {"labels": {"app": CLUSTER_ID, "component": "jobmanager"}},
                    "spec": {"containers": [{"name": "jobmanager", "image": "rmd:demo"}]},
                },
            },
        }
    )


async def until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = STEP_TIMEOUT, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


class JobMaster:
    """Speaks the daemon's HTTP API as a Flink JobMaster would."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def declare(self, job: str, slots: int) -> dict[str, Any]:
        async with self.http.put(
            f"{self.url}/v1/jobs/{job}/requirements", json={"slots": slots}
        ) as resp:
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
            return body

    async def job(self, job: str, *, wait: float = 0.0) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/v1/jobs/{job}?wait={wait}") as resp:
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
            return body

    async def wait_fulfilled(self, job: str) -> dict[str, Any]:
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            view = await self.job(job, wait=min(20.0, max(0.0, deadline - time.monotonic())))
            if view["fulfilled"]:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} not fulfilled: {view}")

    async def finish(self, job: str) -> None:
        async with self.http.delete(f"{self.url}/v1/jobs/{job}") as resp:
            resp.raise_for_status()

    async def taskmanagers(self) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.url}/v1/taskmanagers") as resp:
            resp.raise_for_status()
            body: dict[str, Any] = await resp.json()
            tms: list[dict[str, Any]] = body["taskmanagers"]
            return tms

    async def metrics(self) -> str:
        async with self.http.get(f"{self.url}/metrics") as resp:
            return await resp.text()


async def tm_pods(kubeconfig: Path) -> list[str]:
    """TaskManager pods alive (not being deleted), as kubectl sees them."""
    out = await kubectl(
        kubeconfig,
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        f"app={CLUSTER_ID},component=taskmanager",
        "-o",
        "json",
    )
    items = json.loads(out)["items"]
    return sorted(
        p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp")
    )


async def play(demo: Demo, jm: JobMaster, kubeconfig: Path) -> None:
    async def step(name: str, body: Callable[[], Awaitable[str]]) -> None:
        record = Step(name)
        demo.steps.append(record)
        demo.say(f"▶ {name}")
        began = time.monotonic()
        record.detail = await body()
        record.seconds = time.monotonic() - began
        record.ok = True
        demo.say(f"✔ {name} — {record.detail} ({record.seconds:.1f} s)")

    async def job_a() -> str:
        await jm.declare("job-a", 8)
        view = await jm.wait_fulfilled("job-a")
        pods = await tm_pods(kubeconfig)
        if len(pods) != 2:
            raise AssertionError(f"expected 2 TaskManager pods, found {pods}")
        tms = {s["taskmanager_id"] for s in view["slots"]}
        return f"8/8 slots on {len(tms)} TaskManagers: {', '.join(sorted(tms))}"

    async def job_b() -> str:
        await jm.declare("job-b", 4)
        view = await jm.wait_fulfilled("job-b")
        pods = await tm_pods(kubeconfig)
        return f"4/4 slots on {view['slots'][0]['taskmanager_id']}; pods now {len(pods)}"

    async def kill_b() -> str:
        victim = (await jm.job("job-b"))["slots"][0]["taskmanager_id"]
        demo.say(f"  kubectl delete pod {victim}")
        await kubectl(kubeconfig, "-n", NAMESPACE, "delete", "pod", victim, "--wait=false")

        async def replaced() -> bool:
            view = await jm.job("job-b")
            owners = {s["taskmanager_id"] for s in view["slots"]}
            return bool(view["fulfilled"]) and victim not in owners

        await until(replaced, what="job B whole again on a replacement TaskManager")
        view = await jm.job("job-b")
        return f"{victim} replaced by {view['slots'][0]['taskmanager_id']}; B has 4/4 slots"

    async def finish_a() -> str:
        held = {s["taskmanager_id"] for s in (await jm.job("job-a"))["slots"]}
        finished_at = time.monotonic()
        await jm.finish("job-a")
        demo.say(f"  job A finished; its TaskManagers idle for {IDLE_TIMEOUT:.0f} s go")

        async def released() -> bool:
            return not (held & set(await tm_pods(kubeconfig)))

        await until(released, what="job A's TaskManagers released")
        return (
            f"{len(held)} TaskManagers released {time.monotonic() - finished_at:.1f} s after "
            f"the job finished (idle timeout {IDLE_TIMEOUT:.0f} s)"
        )

    await step("job A declares 8 slots (4 per TaskManager)", job_a)
    await step("job B declares 4 slots", job_b)
    await step("a TaskManager pod of job B is deleted with kubectl", kill_b)
    await step("job A finishes", finish_a)


def summary(demo: Demo, tms: Sequence[dict[str, Any]], metrics: str) -> None:
    print("\nSummary")
    print(f"  {'STEP':<52}{'RESULT':<8}{'SECONDS':>8}")
    for s in demo.steps:
        print(f"  {s.name:<52}{'ok' if s.ok else 'FAILED':<8}{s.seconds:>8.1f}")
    print("\nTaskManagers now")
    print(f"  {'ID':<34}{'STATE':<12}{'SLOTS':<8}ADDRESS")
    for tm in tms:
        slots = f"{tm['slots_allocated']}/{tm['slots_total']}"
        print(f"  {tm['taskmanager_id']:<34}{tm['state']:<12}{slots:<8}{tm['address']}")
    wanted = (
        "rmd_num_registered_taskmanagers",
        "rmd_num_pending_taskmanagers",
        "rmd_task_slots",
        "rmd_task_slots_available",
        "rmd_pods_created_total",
        "rmd_pods_deleted_total",
        "rmd_taskmanagers_lost_total",
        "rmd_slot_allocation_seconds_count",
        "rmd_slot_allocation_seconds_sum",
        "rmd_taskmanager_startup_seconds_count",
        "rmd_taskmanager_startup_seconds_sum",
    )
    print("\nKey metrics")
    for line in metrics.splitlines():
        labelled_zero = "{" in line and line.endswith(" 0.0")
        if line.startswith(wanted) and not labelled_zero:
            print(f"  {line}")


async def run_demo(workdir: Path) -> int:
    demo = Demo()
    plane = ControlPlane(workdir / "cluster")
    daemon: asyncio.subprocess.Process | None = None
    ok = False
    try:
        demo.say("starting the local control plane (the first run builds Kubernetes: minutes)")
        state = await asyncio.to_thread(plane.up, nodes=2)
        kubeconfig = Path(state.kubeconfig)
        demo.say(f"control plane up: {state.server}")
        await kubectl(kubeconfig, "create", "namespace", NAMESPACE)
        await kubectl(kubeconfig, "apply", "-f", "-", stdin=jobmanager_deployment())
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        overrides = {
            "kubernetes.cluster-id": CLUSTER_ID,
            "kubernetes.namespace": NAMESPACE,
            "kubernetes.container.image": "rmd-taskmanager:demo",
            "taskmanager.numberOfTaskSlots": str(SLOTS_PER_TM),
            "taskmanager.memory.process.size": "512m",
            "kubernetes.taskmanager.cpu": "0.5",
            "resourcemanager.taskmanager-timeout": f"{IDLE_TIMEOUT:.0f} s",
            "heartbeat.interval": "2 s",
            "rmd.rest.address": "127.0.0.1",
            "rmd.rest.port": str(port),
            "rmd.taskmanager.resourcemanager-url": url,
            "rmd.taskmanager.agent-command": f"{sys.executable};-m;rmd;taskmanager",
            "rmd.taskmanager.supervise-flink": "false",
            "kubernetes.taskmanager.annotations": "emulator.rmd.dev/run:process",
        }
        conf_dir = workdir / "conf"  # empty: every setting of the demo is on the command line
        conf_dir.mkdir()
        argv = [
            sys.executable,
            "-m",
            "rmd",
            "daemon",
            "--kubeconfig",
            str(kubeconfig),
            "--conf-dir",
            str(conf_dir),
        ]
        for key, value in overrides.items():
            argv += ["-D", f"{key}={value}"]
        daemon_log = workdir / "daemon.log"
        with daemon_log.open("wb") as sink:
            daemon = await asyncio.create_subprocess_exec(
                *argv, stdout=sink, stderr=subprocess.STDOUT
            )
        demo.say(f"daemon started on {url} (log: {daemon_log})")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:

            async def ready() -> bool:
                if daemon is not None and daemon.returncode is not None:
                    raise RuntimeError(f"the daemon exited; see {daemon_log}")
                try:
                    async with http.get(f"{url}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(ready, timeout=30, what="daemon ready")
            jm = JobMaster(http, url)
            try:
                await play(demo, jm, kubeconfig)
                ok = True
            except (AssertionError, TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
                demo.say(f"✘ {exc}")
            summary(demo, await jm.taskmanagers(), await jm.metrics())
    except ClusterError as exc:
        demo.say(f"✘ control plane: {exc}")
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(daemon.wait(), timeout=20)
            except TimeoutError:
                daemon.kill()
                await daemon.wait()
        demo.say("cleaning up: stopping the control plane")
        await asyncio.to_thread(plane.down)
    print(f"\ndemo {'PASSED' if ok else 'FAILED'}: {sum(s.ok for s in demo.steps)}/4 steps")
    return 0 if ok and len(demo.steps) == 4 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmd_dev.demo_sim", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="rmd-demo-"))
    try:
        code = run_cancellable(run_demo(workdir))
        if code is None:
            print("demo stopped by SIGTERM; what it started has been stopped", file=sys.stderr)
            return SIGTERM_EXIT_CODE
        return code
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
