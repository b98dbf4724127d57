"""The node emulator: plays the kubelet for pods bound to the dev cluster's fake nodes.

Run as ``python -m rmd_dev.emulator --kubeconfig K --state-dir D --nodes
rmd-node-1,rmd-node-2 [--unpullable-images PATTERNS]`` (``rmd dev-cluster up`` does it).
It logs JSON lines to stderr and, on SIGTERM or SIGINT, stops every process it started and
exits 0 (pods are left as they are, as when a node goes away).

What happens to a pod the scheduler binds to one of ``--nodes``:

* It gets its own loopback address as pod IP (``127.1.x.y``, freed when the pod is gone;
  Linux routes all of 127/8 to ``lo``, so a process can bind to it), hostIP ``127.0.0.1``,
  and the kubelet's status: phase Running, conditions PodScheduled / Initialized /
  ContainersReady / Ready, ``containerStatuses`` with ``containerID emulator://<uid>/<name>``
  and ``state.running.startedAt``. Init containers are reported terminated with exit code 0
  (their commands are not run). A container run as a process with an ``httpGet`` or
  ``tcpSocket`` readinessProbe is probed as the kubelet does (initialDelaySeconds,
  periodSeconds, timeoutSeconds, success/failureThreshold; ``containerStatuses[].ready`` and
  the Ready / ContainersReady conditions follow); any other started container is ready
  (liveness and startup probes are not run: there are no restarts here).
* What runs is chosen by the annotation ``emulator.rmd.dev/run``:

  - ``"process"``: each container's ``command`` + ``args`` (``$(VAR)`` expanded; ``args``
    alone are taken as the whole command line, since there is no image entrypoint) runs as
    a local OS process in its own process group, with cwd ``D/pods/<ns>/<name>`` and
    stdout+stderr appended to ``D/pods/<ns>/<name>/<container>.log``. A container with
    neither runs nothing.
  - ``"coroutine"``: the workload named by ``emulator.rmd.dev/workload`` (default
    ``rmd-agent``; see :data:`rmd_dev.emulator.workloads.WORKLOADS`) runs inside the
    emulator as the pod's first container, for benchmarks with hundreds of pods; its return
    value is the exit code; deleting the pod sets its ``stop`` event. Start, end and
    tracebacks go to the container's log file.
  - anything else, or no annotation: Running with no process, like a pause container.

* The environment is the kubelet's: ``env`` values with ``$(VAR)`` expansion, downward-API
  ``fieldRef`` (metadata.name/namespace/uid/labels/annotations, spec.nodeName,
  spec.serviceAccountName, status.podIP/podIPs/hostIP), ``resourceFieldRef``,
  ``configMapKeyRef`` / ``secretKeyRef`` and ``envFrom`` (read through the API; ``optional``
  honoured; a missing required one keeps the container waiting with
  ``CreateContainerConfigError`` and the kubelet's message, retried every 2 s), plus
  ``KUBERNETES_SERVICE_HOST=127.0.0.1``, ``KUBERNETES_SERVICE_PORT(_HTTPS)`` (the API
  server's port), ``HOSTNAME``, and PATH and HOME from the emulator (PATH with the
  emulator's Python directory first, so the project's ``rmd`` and ``python`` resolve).
  Nothing else of the emulator's own environment is passed on.
* Service account: when the admission plugin mounted the token Secret (i.e. unless
  ``automountServiceAccountToken: false``), its ``token``, ``ca.crt`` and ``namespace`` are
  written to ``D/pods/<ns>/<name>/serviceaccount/`` and ``RMD_SERVICE_ACCOUNT_DIR`` points
  there (rmd's in-cluster loader reads them from there instead of /var/run/secrets/...).
* Exit of the processes → ``state.terminated`` (exitCode; reason Completed or Error;
  128+signal when killed), and once all containers have ended phase Succeeded (all 0) or
  Failed. **No container restarts are emulated**, whatever the ``restartPolicy``. A command
  that cannot be executed terminates with ``ContainerCannotRun`` (127 not found, 126 not
  executable).
* Deletion (``deletionTimestamp`` set): SIGTERM to the process group, SIGKILL after
  ``deletionGracePeriodSeconds``; then, as the kubelet does, the last status (each
  container ``terminated`` with the exit code it ended with — its own, 143 after SIGTERM,
  137 after SIGKILL — and the phase that follows), then DELETE with grace period 0 and a UID
  precondition, so nothing stays Terminating. A container that exits while its pod is being
  deleted is reported too. Pods without a process, and finished pods, are deleted at once.

Simulated trouble:

* ``emulator.rmd.dev/image-pull-error: "true"``, or a container image matching one of the
  ``--unpullable-images`` fnmatch patterns (comma-separated): the pod stays Pending, the
  container waiting ``ErrImagePull`` (the docker-era kubelet's "rpc error: ... pull access
  denied ..." message), then ``ImagePullBackOff``, alternating with a doubling back-off
  (2 s up to 30 s), until the pod is deleted.
* ``emulator.rmd.dev/crash-after: "N"`` (seconds, a float): N seconds after the start every
  running container is killed and reported terminated with exit code 1, reason Error —
  whether or not a process was configured.
* No capacity: a pod that asks for more than any node has, or whose nodeSelector no node
  matches, is never bound by the real scheduler; the emulator only looks at bound pods, so
  it stays Pending / Unschedulable untouched. (Node sizes: ``rmd_dev.nodes``.)

After a restart of the emulator, pods it finds Running without a process of its own are
kept Running when they run nothing, and are otherwise reported terminated
(``ContainerStatusUnknown``, exit code 137, phase Failed): their processes are gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from kubernetes_asyncio import client, config

from rmd.core.clock import Clock, SystemClock
from rmd.logs import configure_logging
from rmd_dev.emulator.api import EmulatorApi
from rmd_dev.emulator.env import INHERITED_VARIABLES, ApiServerAddress
from rmd_dev.emulator.ips import PodIpAllocator, random_first_index
from rmd_dev.emulator.plan import parse_image_patterns
from rmd_dev.emulator.pod import EmulatorTimings, PodWorker, WorkerContext
from rmd_dev.emulator.watch import PodFeed
from rmd_dev.emulator.workloads import WORKLOADS, Workload

log = structlog.get_logger(__name__)
Pod = dict[str, Any]

SHUTDOWN_GRACE_SECONDS = 5.0


def inherited_environment(environ: Mapping[str, str], *, python: str) -> dict[str, str]:
    """PATH (with the directory of ``python`` first) and HOME of the emulator."""
    inherited = {name: environ[name] for name in INHERITED_VARIABLES if name in environ}
    python_dir = str(Path(python).parent)
    parts = [part for part in inherited.get("PATH", os.defpath).split(os.pathsep) if part]
    if python_dir not in parts:
        parts.insert(0, python_dir)
    inherited["PATH"] = os.pathsep.join(parts)
    return inherited


def api_server_address(host_url: str) -> ApiServerAddress:
    """``https://127.0.0.1:6443`` → host 127.0.0.1, port 6443 (443 when none is given)."""
    parts = urlsplit(host_url)
    return ApiServerAddress(host=parts.hostname or "127.0.0.1", port=parts.port or 443)


class Emulator:
    """Keeps one :class:`PodWorker` per pod bound to ``nodes``, fed by one pod watch."""

    def __init__(
        self,
        *,
        api: EmulatorApi,
        nodes: Sequence[str],
        state_dir: Path,
        api_server: ApiServerAddress,
        inherited_env: Mapping[str, str],
        unpullable_images: Sequence[str] = (),
        workloads: Mapping[str, Workload] | None = None,
        clock: Clock | None = None,
        timings: EmulatorTimings | None = None,
    ) -> None:
        self._api = api
        self._nodes = frozenset(nodes)
        self._context = WorkerContext(
            api=api,
            ips=PodIpAllocator(first_index=random_first_index()),
            state_dir=state_dir,
            api_server=api_server,
            inherited_env=dict(inherited_env),
            clock=clock or SystemClock(),
            workloads=workloads if workloads is not None else WORKLOADS,
            unpullable_images=tuple(unpullable_images),
            timings=timings or EmulatorTimings(),
        )
        self._workers: dict[str, PodWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._feed = PodFeed(api, on_snapshot=self.observe_snapshot, on_event=self.observe_event)

    @property
    def synced(self) -> asyncio.Event:
        return self._feed.synced

    def worker_count(self) -> int:
        return len(self._workers)

    def _ours(self, pod: Pod) -> bool:
        return (pod.get("spec") or {}).get("nodeName") in self._nodes

    @staticmethod
    def _uid(pod: Pod) -> str:
        return str((pod.get("metadata") or {}).get("uid", ""))

    def observe_event(self, kind: str, pod: Pod) -> None:
        uid = self._uid(pod)
        if not uid:
            return
        if kind == "DELETED":
            self._gone(uid, pod)
        elif self._ours(pod):
            self._seen(uid, pod)

    def observe_snapshot(self, pods: list[Pod]) -> None:
        ours = [pod for pod in pods if self._uid(pod) and self._ours(pod)]
        # Addresses of pods that run (e.g. from before a restart) are taken before any new
        # pod is handed one.
        for pod in ours:
            status = pod.get("status") or {}
            if status.get("podIP") and status.get("phase") not in ("Succeeded", "Failed"):
                self._context.ips.reserve(str(status["podIP"]), owner=self._uid(pod))
        present: set[str] = set()
        for pod in ours:
            uid = self._uid(pod)
            present.add(uid)
            self._seen(uid, pod)
        for uid in [uid for uid in self._workers if uid not in present]:
            self._gone(uid, None)

    def _seen(self, uid: str, pod: Pod) -> None:
        worker = self._workers.get(uid)
        if worker is not None:
            worker.observe(pod)
            return
        worker = PodWorker(pod, context=self._context)
        self._workers[uid] = worker
        task = asyncio.create_task(worker.run(), name=f"pod {worker.namespace}/{worker.name}")
        self._tasks[uid] = task
        task.add_done_callback(functools.partial(self._worker_done, uid))

    def _gone(self, uid: str, pod: Pod | None) -> None:
        worker = self._workers.get(uid)
        if worker is None:
            return
        worker.observe_gone(pod)
        task = self._tasks.get(uid)
        if task is None or task.done():
            self._forget(uid)

    def _worker_done(self, uid: str, _task: asyncio.Task[None]) -> None:
        task = self._tasks.get(uid)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("emulator_worker_crashed", uid=uid, error=repr(task.exception()))
        worker = self._workers.get(uid)
        # Keep a finished worker until the pod is gone, so a late event does not start the
        # pod over; forget it once both happened.
        if worker is not None and worker.gone:
            self._forget(uid)

    def _forget(self, uid: str) -> None:
        self._workers.pop(uid, None)
        self._tasks.pop(uid, None)

    async def run(self) -> None:
        """Watch and emulate until cancelled; then stop every container (no API calls)."""
        log.info("emulator_started", nodes=sorted(self._nodes))
        try:
            await self._feed.run()
        finally:
            await self.shutdown()

    async def shutdown(self, *, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop every container (SIGTERM, SIGKILL after ``grace_seconds``) and leave the pods
        as they are on the API server, as when a node goes away."""
        self._context.stopping = True
        workers = list(self._workers.values())
        tasks = [task for task in self._tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(
            *(worker.stop_runners(grace_seconds=grace_seconds) for worker in workers),
            return_exceptions=True,
        )
        log.info("emulator_stopped", pods=len(workers))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rmd_dev.emulator",
        description="Play the kubelet for pods bound to the dev cluster's fake nodes.",
    )
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--nodes", required=True, help="comma-separated node names")
    parser.add_argument(
        "--unpullable-images",
        default="",
        help="comma-separated fnmatch patterns of images whose pull fails (simulated)",
    )
    parser.add_argument("--max-concurrent-writes", type=int, default=8)
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(args.kubeconfig), client_configuration=configuration
    )
    nodes = [name.strip() for name in str(args.nodes).split(",") if name.strip()]
    state_dir: Path = args.state_dir
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with client.ApiClient(configuration) as api_client:
        emulator = Emulator(
            api=EmulatorApi(api_client, max_concurrent_writes=args.max_concurrent_writes),
            nodes=nodes,
            state_dir=state_dir,
            api_server=api_server_address(str(configuration.host)),
            inherited_env=inherited_environment(os.environ, python=sys.executable),
            unpullable_images=parse_image_patterns(args.unpullable_images),
        )
        running = asyncio.create_task(emulator.run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        running.cancel()
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # JSON lines on stderr; aiohttp and kubernetes_asyncio only from WARNING up.
    configure_logging(level=args.log_level, library_level="warning")
    args.state_dir = args.state_dir.resolve()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
