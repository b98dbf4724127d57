"""``make demo``: the real story, end to end, on the embedded local control plane.

A real Flink JobManager and the rmd daemon run as local processes beside a real local control
plane (as the JobManager pod would run them); the daemon follows Flink's REST API. Then:

1. the cluster and the JobManager pod start, and rmd follows Flink;
2. a streaming job is submitted to Flink with parallelism 4 → rmd declares 4 slots for it;
3. rmd creates TaskManager pods (2 slots each → 2 pods);
4. real Flink TaskManagers in those pods register with Flink (their ids are the pod names);
5. every task of the job is RUNNING;
6. a TaskManager pod is deleted with kubectl → Flink loses it and restarts the job
   (fixed-delay restart strategy);
7. the job runs again on a replacement pod rmd created;
8. the job is cancelled → rmd drops its demand;
9. the TaskManagers are released once Flink and rmd have seen them idle for the idle timeout;
10. everything the demo started is stopped, and no process of it is left.

Each step is printed as it happens — elapsed time, what was observed (pod names, Flink's
``/taskmanagers`` ids, task states) and PASS or FAIL. The exit code is 0 only if every step
passed; SIGTERM (exit 143) or Ctrl-C (exit 130) stop everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from rmd_dev.cluster import ClusterError, ControlPlane
from rmd_dev.flink.jobjar import compile_rate_job
from rmd_dev.flink.jobmanager import (
    FlinkRest,
    FlinkRestError,
    JobManagerPorts,
    LocalJobManager,
    jobmanager_configuration,
    jobmanager_deployment_manifest,
    task_states,
    task_total,
    write_conf_dir,
)
from rmd_dev.interrupt import SIGTERM_EXIT_CODE, run_cancellable
from rmd_dev.kubectl import KubectlError, kubectl
from rmd_dev.provision import (
    DEFAULT_FLINK_VERSION,
    FlinkInstall,
    PhaseLog,
    ProvisionError,
    cache_root,
    provision_flink,
)

NAMESPACE = "rmd-demo"
CLUSTER_ID = "flink-demo"
PARALLELISM = 4
SLOTS_PER_TASKMANAGER = 2
TASKMANAGERS = PARALLELISM // SLOTS_PER_TASKMANAGER
IDLE_TIMEOUT = 5.0
JVM_TIMEOUT = 180.0  # TaskManager JVMs start in 10-20 s on an idle 2-core machine
STEP_TIMEOUT = 60.0
POLL = 0.5
TM_SELECTOR = f"type=flink-native-kubernetes,component=taskmanager,app={CLUSTER_ID}"
STEPS = 10
SIGINT_EXIT_CODE = 130


class StepFailed(Exception):
    """A step did not see what it waited for; the message says what it saw instead."""


@dataclass
class Step:
    number: int
    name: str
    ok: bool = False
    stopped: bool = False  # interrupted by SIGTERM or Ctrl-C
    at: float = 0.0  # seconds since the demo started, when it ended
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Story:
    """Prints the story as it happens and keeps each step's outcome."""

    started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    async def step(
        self, name: str, body: Callable[[], Awaitable[str]], *, number: int | None = None
    ) -> None:
        """Run one step: PASS with what ``body`` observed, or FAIL (and raise StepFailed)."""
        record = Step(number or len(self.steps) + 1, name)
        self.steps.append(record)
        self.say(f"▶ step {record.number}/{STEPS}: {name}")
        began = time.monotonic()
        try:
            record.detail = await body()
            record.ok = True
        except (StepFailed, KubectlError, FlinkRestError, aiohttp.ClientError) as exc:
            record.detail = str(exc) or type(exc).__name__
        except asyncio.CancelledError:
            record.stopped = True
            record.seconds = time.monotonic() - began
            record.at = self.elapsed()
            self.say(f"STOPPED step {record.number}: {name} (SIGTERM or Ctrl-C)")
            raise
        record.seconds = time.monotonic() - began
        record.at = self.elapsed()
        verdict = "PASS" if record.ok else "FAIL"
        took = f"{record.seconds:.1f} s"
        self.say(f"{verdict} step {record.number}: {name} — {record.detail} ({took})")
        if not record.ok:
            raise StepFailed(record.detail)

    async def until(
        self,
        what: str,
        probe: Callable[[], Awaitable[tuple[bool, str]]],
        *,
        timeout: float = STEP_TIMEOUT,
        alive: Callable[[], list[str]] = list,
    ) -> str:
        """Poll ``probe`` (done?, what it saw) until done; print each new observation. Fails
        after ``timeout`` with the last observation, or at once if a process in ``alive()``
        ended."""
        deadline = time.monotonic() + timeout
        seen = ""
        while True:
            dead = alive()
            if dead:
                raise StepFailed(f"{', '.join(dead)} ended while waiting for {what}")
            try:
                done, observed = await probe()
            except (FlinkRestError, aiohttp.ClientError, KubectlError, TimeoutError) as exc:
                done, observed = False, f"not answering yet ({str(exc) or type(exc).__name__})"
            if observed != seen:
                self.say(f"  · {observed}")
                seen = observed
            if done:
                return observed
            if time.monotonic() > deadline:
                raise StepFailed(f"no {what} after {timeout:.0f} s; last seen: {seen}")
            await asyncio.sleep(POLL)


def jobmanager_deployment() -> str:
    """The demo's JobManager Deployment, as kubectl takes it."""
    return json.dumps(jobmanager_deployment_manifest(CLUSTER_ID, namespace=NAMESPACE))


@dataclass
class Cluster:
    """What the story looks at: kubectl, Flink's REST API, rmd's HTTP API."""

    kubeconfig: Path
    jobmanager: LocalJobManager
    flink: FlinkRest
    http: aiohttp.ClientSession

    async def pods(self) -> tuple[list[str], list[str]]:
        """TaskManager pods as kubectl sees them: (alive, being deleted)."""
        out = await kubectl(
            self.kubeconfig, "-n", NAMESPACE, "get", "pods", "-l", TM_SELECTOR, "-o", "json"
        )
        items = json.loads(out)["items"]
        alive = sorted(
            p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp")
        )
        going = sorted(
            p["metadata"]["name"] for p in items if p["metadata"].get("deletionTimestamp")
        )
        return alive, going

    async def rmd(self, path: str) -> Any:
        async with self.http.get(f"{self.jobmanager.daemon_url}{path}") as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise StepFailed(f"rmd GET {path}: {response.status} {body}")
            return body

    async def rmd_jobs(self) -> dict[str, dict[str, Any]]:
        body = await self.rmd("/v1/jobs")
        return {str(job["job_id"]): job for job in body["jobs"]}

    async def tasks(self, job_id: str) -> tuple[bool, str]:
        """(every task RUNNING?, task states and where the running ones are)."""
        job = await self.flink.job(job_id)
        states = task_states(job)
        total = task_total(job)
        running = states.get("RUNNING", 0)
        text = f"job {job['state']}; tasks " + ", ".join(f"{n} {s}" for s, n in states.items())
        if running:
            placement = await self.flink.task_placement(job_id)
            text += "; running on " + ", ".join(f"{tm} x{n}" for tm, n in placement.items())
        return job["state"] == "RUNNING" and running == total > 0, text


async def play(story: Story, cluster: Cluster, jar: Path) -> None:
    job_id = ""
    alive = cluster.jobmanager.exited
    pods: list[str] = []
    cancelled_at = 0.0

    async def submit() -> str:
        nonlocal job_id
        jar_id = await cluster.flink.upload_jar(jar)
        job_id = await cluster.flink.submit(jar_id, parallelism=PARALLELISM)
        story.say(f"  · Flink job {job_id} submitted (POST /jars/{jar_id}/run?parallelism=4)")

        async def declared() -> tuple[bool, str]:
            job = (await cluster.rmd_jobs()).get(job_id)
            if job is None:
                return False, "rmd has no demand for it yet"
            return job["slots_required"] == PARALLELISM, (
                f"rmd declared {job['slots_required']} slots for {job_id} (from Flink's REST API)"
            )

        return await story.until("demand in rmd", declared, alive=alive)

    async def pods_created() -> str:
        nonlocal pods

        async def created() -> tuple[bool, str]:
            alive_pods, _ = await cluster.pods()
            return len(alive_pods) == TASKMANAGERS, f"pods: {', '.join(alive_pods) or 'none'}"

        seen = await story.until("TaskManager pods", created, alive=alive)
        pods = (await cluster.pods())[0]
        return f"{seen} ({SLOTS_PER_TASKMANAGER} slots each)"

    async def registered() -> str:
        nonlocal pods

        async def listed() -> tuple[bool, str]:
            alive_pods, going = await cluster.pods()
            ids = await cluster.flink.taskmanager_ids()
            text = f"pods: {', '.join(alive_pods) or 'none'}"
            if going:
                text += f" (deleting: {', '.join(going)})"
            text += f"; Flink /taskmanagers: {', '.join(ids) or 'none'}"
            return len(ids) == TASKMANAGERS and ids == alive_pods, text

        seen = await story.until("Flink TaskManagers", listed, timeout=JVM_TIMEOUT, alive=alive)
        pods = await cluster.flink.taskmanager_ids()
        return seen

    async def running() -> str:
        return await story.until(
            "every task RUNNING", lambda: cluster.tasks(job_id), timeout=JVM_TIMEOUT, alive=alive
        )

    async def delete_pod() -> str:
        victim = pods[-1]
        before = await cluster.flink.last_restart(job_id)
        story.say(f"  · kubectl -n {NAMESPACE} delete pod {victim} --wait=false")
        await kubectl(cluster.kubeconfig, "-n", NAMESPACE, "delete", "pod", victim, "--wait=false")

        async def restarted() -> tuple[bool, str]:
            # the job's own RESTARTING time: the numRestarts metric lags up to 10 s
            restarting = await cluster.flink.last_restart(job_id)
            ids = await cluster.flink.taskmanager_ids()
            job = await cluster.flink.job(job_id)
            done = restarting > before and victim not in ids
            return done, (
                f"Flink job {job['state']}, "
                f"{'restarted' if restarting > before else 'not restarted yet'}; "
                f"Flink /taskmanagers: {', '.join(ids) or 'none'}"
            )

        seen = await story.until("the job restarting", restarted, alive=alive)
        return f"{victim} gone from Flink; {seen}"

    async def replaced() -> str:
        victim = pods[-1]

        async def replacement() -> tuple[bool, str]:
            alive_pods, going = await cluster.pods()
            ids = await cluster.flink.taskmanager_ids()
            new = [p for p in alive_pods if p not in pods]
            text = f"pods: {', '.join(alive_pods)}"
            if going:
                text += f" (deleting: {', '.join(going)})"
            text += f"; Flink /taskmanagers: {', '.join(ids) or 'none'}"
            return bool(new) and ids == alive_pods and victim not in ids, text

        await story.until(
            "a replacement TaskManager", replacement, timeout=JVM_TIMEOUT, alive=alive
        )
        new = [p for p in (await cluster.pods())[0] if p not in pods]
        seen = await story.until(
            "every task RUNNING again",
            lambda: cluster.tasks(job_id),
            timeout=JVM_TIMEOUT,
            alive=alive,
        )
        return f"replacement {', '.join(new)} registered; {seen}"

    async def cancel() -> str:
        nonlocal cancelled_at
        cancelled_at = time.monotonic()
        await cluster.flink.cancel(job_id)
        story.say(f"  · PATCH /jobs/{job_id}?mode=cancel")

        async def dropped() -> tuple[bool, str]:
            state = (await cluster.flink.job(job_id))["state"]
            jobs = await cluster.rmd_jobs()
            demand = "rmd still has its demand" if job_id in jobs else "rmd dropped its demand"
            return state == "CANCELED" and job_id not in jobs, f"Flink job {state}; {demand}"

        return await story.until("the job cancelled", dropped, alive=alive)

    async def released() -> str:
        deleting_at: float | None = None

        async def gone() -> tuple[bool, str]:
            nonlocal deleting_at
            alive_pods, going = await cluster.pods()
            if not alive_pods and deleting_at is None:
                deleting_at = time.monotonic()
            ids = await cluster.flink.taskmanager_ids()
            text = f"pods: {', '.join(alive_pods) or 'none'}"
            if going:
                text += f" (deleting: {', '.join(going)})"
            text += f"; Flink /taskmanagers: {', '.join(ids) or 'none'}"
            return not alive_pods and not going and not ids, text

        await story.until(
            "the TaskManagers released", gone, timeout=IDLE_TIMEOUT + STEP_TIMEOUT, alive=alive
        )
        gone_after = time.monotonic() - cancelled_at
        deleted_after = (deleting_at or time.monotonic()) - cancelled_at
        if deleted_after < IDLE_TIMEOUT:
            raise StepFailed(
                f"deleted {deleted_after:.1f} s after the cancel: before the idle timeout"
            )
        return (
            f"every TaskManager pod deleted {deleted_after:.1f} s after the cancel (idle timeout "
            f"{IDLE_TIMEOUT:.0f} s), gone from Kubernetes and Flink after {gone_after:.1f} s"
        )

    await story.step(f"submit a streaming job with parallelism {PARALLELISM} to Flink", submit)
    await story.step("rmd creates TaskManager pods", pods_created)
    await story.step("real Flink TaskManagers register with Flink", registered)
    await story.step("every task is RUNNING", running)
    await story.step(
        "a TaskManager pod is deleted with kubectl; Flink restarts the job", delete_pod
    )
    await story.step("the job runs again on a replacement TaskManager", replaced)
    await story.step("the job is cancelled", cancel)
    await story.step("the TaskManagers are released after the idle timeout", released)


async def start_cluster(
    story: Story, *, plane: ControlPlane, flink: FlinkInstall, work_dir: Path
) -> tuple[Path, LocalJobManager]:
    """The control plane, the namespace, the JobManager Deployment and the JobManager pod's
    processes (started; not yet ready)."""
    state = await asyncio.to_thread(plane.up, nodes=2)
    kubeconfig = Path(state.kubeconfig)
    story.say(f"  · control plane up at {state.server}; nodes {', '.join(state.node_names)}")
    await kubectl(kubeconfig, "create", "namespace", NAMESPACE)
    await kubectl(kubeconfig, "apply", "-f", "-", stdin=jobmanager_deployment())
    ports = JobManagerPorts.free()
    jm_dir = work_dir / "jobmanager"
    jm_dir.mkdir()
    values = jobmanager_configuration(
        flink=flink,
        cluster_id=CLUSTER_ID,
        namespace=NAMESPACE,
        work_dir=jm_dir,
        ports=ports,
        extra={
            "taskmanager.numberOfTaskSlots": str(SLOTS_PER_TASKMANAGER),
            "resourcemanager.taskmanager-timeout": f"{IDLE_TIMEOUT:.0f} s",
        },
    )
    jobmanager = LocalJobManager(flink=flink, work_dir=jm_dir, kubeconfig=kubeconfig, ports=ports)
    await asyncio.to_thread(write_conf_dir, jobmanager.conf_dir, flink=flink, values=values)
    await jobmanager.start()
    story.say(
        f"  · Flink JobManager and rmd daemon started (logs: {jobmanager.log_path('jobmanager')}, "
        f"{jobmanager.log_path('daemon')})"
    )
    return kubeconfig, jobmanager


async def wait_ready(story: Story, cluster: Cluster) -> str:
    async def ready() -> tuple[bool, str]:
        overview = await cluster.flink.get("/overview")
        readyz = await cluster.rmd("/readyz")
        following = readyz.get("flink", {}).get("state")
        return following == "following", (
            f"Flink {overview.get('flink-version', '?')} at {cluster.flink.url}; "
            f"rmd at {cluster.jobmanager.daemon_url}: {following}"
        )

    return await story.until(
        "Flink and rmd ready", ready, timeout=JVM_TIMEOUT, alive=cluster.jobmanager.exited
    )


async def shut_down(
    story: Story,
    *,
    plane: ControlPlane,
    kubeconfig: Path | None,
    jobmanager: LocalJobManager | None,
    work_dir: Path,
) -> str:
    """Stop the daemon (no more pods), delete the TaskManager pods (the emulator stops their
    JVMs), stop Flink's JobManager and the control plane; then check nothing is left."""
    if jobmanager is not None:
        await jobmanager.stop("daemon")
    if kubeconfig is not None and plane.status() is not None:
        try:
            await kubectl(
                kubeconfig,
                "-n",
                NAMESPACE,
                "delete",
                "pods",
                "-l",
                TM_SELECTOR,
                "--grace-period=10",
                "--wait=true",
                "--timeout=50s",
            )
        except KubectlError as exc:
            story.say(f"  · {exc}")
    if jobmanager is not None:
        await jobmanager.stop("jobmanager")
    busy = await asyncio.to_thread(plane.down)
    left = await asyncio.to_thread(
        subprocess.run,
        ["pgrep", "-a", "-f", str(work_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    problems = []
    if left.stdout.strip():
        problems.append(f"processes left: {left.stdout.strip()}")
    if busy:
        problems.append(f"ports still busy: {busy}")
    if problems:
        raise StepFailed("; ".join(problems))
    return f"no process left (pgrep -f {work_dir}: none); control plane ports free"


def summary(story: Story) -> None:
    print("\nSummary")
    print(f"  {'#':>2}  {'STEP':<68}{'RESULT':<8}{'AT':>8}{'TOOK':>8}")
    ran = {s.number: s for s in story.steps}
    for number in range(1, STEPS + 1):
        s = ran.get(number)
        if s is None:
            print(f"  {number:>2}  {'(not reached)':<68}{'-':<8}")
            continue
        result = "PASS" if s.ok else "STOPPED" if s.stopped else "FAIL"
        print(f"  {s.number:>2}  {s.name:<68}{result:<8}{s.at:>7.1f}s{s.seconds:>7.1f}s")


async def run_demo(work_dir: Path) -> int:
    story = Story()
    plane = ControlPlane(work_dir / "cluster")
    kubeconfig: Path | None = None
    jobmanager: LocalJobManager | None = None
    story.say(f"rmd demo: the real story (work directory {work_dir})")
    try:
        flink = await asyncio.to_thread(
            provision_flink,
            log=PhaseLog(log_path=cache_root() / "provision.log"),
            version=DEFAULT_FLINK_VERSION,
        )
        jar = await asyncio.to_thread(compile_rate_job, flink)

        async def start() -> str:
            nonlocal kubeconfig, jobmanager
            kubeconfig, jobmanager = await start_cluster(
                story, plane=plane, flink=flink, work_dir=work_dir
            )
            return await wait_ready(story, cluster(jobmanager))

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

            def cluster(jm: LocalJobManager) -> Cluster:
                assert kubeconfig is not None
                return Cluster(kubeconfig, jm, FlinkRest(http, jm.rest_url), http)

            try:
                await story.step(
                    "the local cluster and the JobManager pod start; rmd follows Flink", start
                )
                assert jobmanager is not None
                await play(story, cluster(jobmanager), jar)
            except StepFailed:
                pass
    except (ClusterError, ProvisionError, KubectlError) as exc:
        story.say(f"FAIL: {exc}")
    finally:
        story.say("stopping everything the demo started")

        async def stop() -> str:
            return await shut_down(
                story, plane=plane, kubeconfig=kubeconfig, jobmanager=jobmanager, work_dir=work_dir
            )

        with contextlib.suppress(StepFailed):
            await story.step("everything the demo started is stopped", stop, number=STEPS)
        summary(story)
    passed = sum(s.ok for s in story.steps)
    ok = passed == STEPS
    print(f"\ndemo {'PASSED' if ok else 'FAILED'}: {passed}/{STEPS} steps", flush=True)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmd_dev.demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="rmd-demo-"))
    code: int | None = 1
    try:
        code = run_cancellable(run_demo(work_dir))
    except KeyboardInterrupt:
        print("demo stopped by Ctrl-C; what it started has been stopped", file=sys.stderr)
        code = SIGINT_EXIT_CODE
    finally:
        if args.keep or code == 1:  # a failed run keeps its logs
            print(f"work directory kept (logs): {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    if code is None:
        print("demo stopped by SIGTERM; what it started has been stopped", file=sys.stderr)
        return SIGTERM_EXIT_CODE
    return code


if __name__ == "__main__":
    raise SystemExit(main())
