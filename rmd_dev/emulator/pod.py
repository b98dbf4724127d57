"""One pod's life on an emulated node: from bound to Running, to its exit, to its deletion.

A :class:`PodWorker` is one asyncio task per pod (by UID). The pod watch hands it every new
version of the pod (:meth:`PodWorker.observe`) and tells it when the pod is gone; the worker
reports status with merge-PATCHes (skipping ones that would change nothing), runs the
containers through :mod:`rmd_dev.emulator.runner`, and when the pod is deleted stops
them within the grace period and deletes the pod with grace period 0 and a UID precondition,
so nothing stays Terminating. As the kubelet does, the containers' ends are reported even
while the pod is being deleted: a container that exits then (by itself, or stopped by the
deletion) shows ``state.terminated`` with its exit code, and the phase follows (Failed or
Succeeded), before the pod is removed. An error in one pod's handling is logged and never
reaches the other pods or the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.core.clock import Clock
from rmd.kube.retry import api_error_message
from rmd_dev.emulator.api import ApiGaveUp, EmulatorApi, retry_until
from rmd_dev.emulator.env import (
    ApiServerAddress,
    EnvResolutionError,
    EnvSources,
    config_map_values,
    expand_command,
    needs_node_allocatable,
    referenced_sources,
    resolve_container_env,
    secret_values,
    service_account_secret_name,
)
from rmd_dev.emulator.ips import PodIpAllocator
from rmd_dev.emulator.plan import (
    CRASH_AFTER_ANNOTATION,
    PodPlan,
    RunMode,
    containers_of,
    init_containers_of,
    plan_pod,
)
from rmd_dev.emulator.prober import run_readiness_probe
from rmd_dev.emulator.probes import ProbeError, ProbeSpec, readiness_probe
from rmd_dev.emulator.runner import (
    EXIT_KILLED,
    CannotRun,
    ContainerRunner,
    CoroutineRunner,
    PauseRunner,
    ProcessRunner,
)
from rmd_dev.emulator.status import (
    REASON_CANNOT_RUN,
    REASON_CONTAINER_CREATING,
    REASON_CREATE_CONTAINER_CONFIG_ERROR,
    REASON_ERR_IMAGE_PULL,
    REASON_ERROR,
    REASON_IMAGE_PULL_BACKOFF,
    REASON_POD_INITIALIZING,
    REASON_UNKNOWN,
    ContainerState,
    Running,
    Terminated,
    Waiting,
    build_pod_status,
    image_pull_backoff_message,
    image_pull_error_message,
    status_summary,
    terminated_reason,
)
from rmd_dev.emulator.volumes import (
    VolumeError,
    container_mounts,
    object_values,
    pod_volume_sources,
    volume_files,
)
from rmd_dev.emulator.workloads import Workload

Pod = dict[str, Any]
log = structlog.get_logger(__name__)

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True, kw_only=True)
class EmulatorTimings:
    """How long the emulator waits for what (seconds)."""

    image_pull_error_shown: float = 1.0  # ErrImagePull before it turns into ImagePullBackOff
    image_pull_backoff_initial: float = 2.0  # then doubles per failed "pull"
    image_pull_backoff_max: float = 30.0
    config_error_retry: float = 2.0  # a missing ConfigMap/Secret is looked up again after this
    default_grace: float = 30.0  # when a deleted pod says nothing
    forced_grace: float = 2.0  # the kubelet's minimum when a pod vanished (force delete)
    api_retry_base: float = 0.2
    api_retry_max: float = 5.0


@dataclass(kw_only=True)
class WorkerContext:
    """What every pod worker shares."""

    api: EmulatorApi
    ips: PodIpAllocator
    state_dir: Path
    api_server: ApiServerAddress
    inherited_env: Mapping[str, str]
    clock: Clock
    workloads: Mapping[str, Workload]
    unpullable_images: Sequence[str] = ()
    timings: EmulatorTimings = field(default_factory=EmulatorTimings)
    stopping: bool = False  # the emulator shuts down: leave the pods' status as it is

    def pod_dir(self, namespace: str, name: str) -> Path:
        return self.state_dir / "pods" / namespace / name


class _PodGone(Exception):
    """The pod is no longer on the API server: stop reporting about it."""


@dataclass
class _Containers:
    """The running pod's containers as last reported; ``states`` is updated in place."""

    init_states: list[ContainerState]
    states: list[ContainerState]
    runner_of: dict[int, ContainerRunner]  # container index -> its runner (if it started)
    pod_ip: str
    probe_ready: list[bool]  # what each container's readiness probe says (True: no probe)


class PodWorker:
    def __init__(self, pod: Pod, *, context: WorkerContext) -> None:
        metadata = pod.get("metadata") or {}
        self.uid = str(metadata.get("uid", ""))
        self.namespace = str(metadata.get("namespace", ""))
        self.name = str(metadata.get("name", ""))
        self._pod = pod
        self._ctx = context
        self._deletion = asyncio.Event()  # deletionTimestamp seen, or the pod vanished
        self._gone = False
        self._runners: list[ContainerRunner] = []
        self._containers: _Containers | None = None  # set once the containers started
        self._last_summary: tuple[Any, ...] | None = None
        self._report_lock = asyncio.Lock()  # one status PATCH at a time, the newest last
        self._start_time: float | None = None
        self._log = log.bind(pod=f"{self.namespace}/{self.name}", uid=self.uid)
        self._observe_deletion(pod)

    # ------------------------------------------------------------------ from the watch

    @property
    def gone(self) -> bool:
        return self._gone

    @property
    def pod_dir(self) -> Path:
        return self._ctx.pod_dir(self.namespace, self.name)

    def observe(self, pod: Pod) -> None:
        if _resource_version(pod) >= _resource_version(self._pod):
            self._pod = pod
        self._observe_deletion(pod)

    def observe_gone(self, pod: Pod | None = None) -> None:
        if pod is not None:
            self._pod = pod
        self._gone = True
        self._deletion.set()

    def _observe_deletion(self, pod: Pod) -> None:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self._deletion.set()

    def _deleting(self) -> bool:
        return self._deletion.is_set()

    def _grace_seconds(self) -> float:
        metadata = self._pod.get("metadata") or {}
        grace = metadata.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (self._pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        seconds = float(grace) if grace is not None else self._ctx.timings.default_grace
        if self._gone or seconds <= 0:
            # Gone before we could stop anything (a forced delete): the kubelet's minimum.
            seconds = max(seconds, self._ctx.timings.forced_grace)
        return seconds

    async def _wait_deletion(self, timeout: float | None = None) -> bool:
        """True once deletion was requested; False if ``timeout`` passed first."""
        if timeout is None:
            await self._deletion.wait()
            return True
        try:
            async with asyncio.timeout(timeout):  # wait_for may swallow a cancel on 3.11
                await self._deletion.wait()
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ the life

    async def run(self) -> None:
        """Everything for this pod, until it is deleted from the API server (or gone)."""
        try:
            await self._live()
        except asyncio.CancelledError:
            raise
        except _PodGone:
            self.observe_gone()
        except Exception as error:  # never let one pod take the emulator down
            self._log.exception("emulator_pod_failed", error=str(error))
            await self._kill_runners()
        try:
            await self._finish()
        finally:
            self._ctx.ips.release(owner=self.uid)

    async def _live(self) -> None:
        pod = self._pod
        status = pod.get("status") or {}
        plan = plan_pod(pod, unpullable_images=self._ctx.unpullable_images)
        for problem in plan.problems:
            self._log.warning("emulator_annotation_ignored", problem=problem)
        if self._deleting():
            return
        if status.get("phase") in TERMINAL_PHASES:
            return  # finished before we (re)started: only its deletion is left to handle
        if status.get("podIP") and status.get("phase") == "Running":
            await self._adopt(plan)
            return
        self._start_time = _parse_time(status.get("startTime")) or self._ctx.clock.wall()
        earlier_ip = status.get("podIP")
        if earlier_ip and self._ctx.ips.reserve(str(earlier_ip), owner=self.uid):
            pod_ip = str(earlier_ip)  # we gave it this address before a restart
        else:
            pod_ip = self._ctx.ips.allocate(owner=self.uid)
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        if plan.unpullable_containers:
            await self._fail_image_pulls(plan, pod_ip=pod_ip)
            return
        prepared = await self._prepare(plan, pod_ip=pod_ip)
        if prepared is None:
            return  # deleted while waiting for its configuration
        await self._run_containers(plan, pod_ip=pod_ip, prepared=prepared)

    # ------------------------------------------------------------------ status reports

    async def _report(
        self,
        *,
        init_states: Sequence[ContainerState],
        states: Sequence[ContainerState],
        pod_ip: str | None,
        final: bool = False,
        probe_ready: Sequence[bool] | None = None,
    ) -> None:
        """PATCH the status unless it would change nothing; retries transient errors.
        Gives up when the pod is deleted (unless ``final``) or gone. Reports (the probes'
        and the containers') take turns: each builds its document from the state of its turn."""
        async with self._report_lock:
            await self._report_now(
                init_states=init_states,
                states=states,
                pod_ip=pod_ip,
                final=final,
                probe_ready=probe_ready,
            )

    async def _report_now(
        self,
        *,
        init_states: Sequence[ContainerState],
        states: Sequence[ContainerState],
        pod_ip: str | None,
        final: bool,
        probe_ready: Sequence[bool] | None,
    ) -> None:
        document = build_pod_status(
            self._pod,
            init_states=init_states,
            container_states=states,
            pod_ip=pod_ip,
            start_time=self._start_time or self._ctx.clock.wall(),
            now=self._ctx.clock.wall(),
            probe_ready=probe_ready,
        )
        summary = status_summary(document)
        if summary == self._last_summary or self._ctx.stopping:
            return

        def give_up() -> bool:
            return self._gone or (self._deleting() and not final)

        try:
            updated = await retry_until(
                lambda: self._ctx.api.patch_pod_status(
                    namespace=self.namespace, name=self.name, uid=self.uid, status=document
                ),
                what=f"status of pod {self.namespace}/{self.name}",
                give_up=give_up,
                base_delay=self._ctx.timings.api_retry_base,
                max_delay=self._ctx.timings.api_retry_max,
            )
        except ApiGaveUp:
            return
        except ApiException as error:
            if error.status == 404 or (
                error.status == 422 and "metadata.uid" in api_error_message(error)
            ):
                raise _PodGone from error  # deleted, or the name now belongs to another pod
            self._log.error(
                "emulator_status_rejected", status=error.status, error=api_error_message(error)
            )
            return
        self._last_summary = summary
        if updated.get("metadata", {}).get("uid") == self.uid:
            self.observe(updated)
        self._log.info(
            "emulator_pod_status",
            phase=document["phase"],
            containers=[_describe(state) for state in states],
        )

    # ------------------------------------------------------------------ simulated trouble

    async def _fail_image_pulls(self, plan: PodPlan, *, pod_ip: str) -> None:
        containers = containers_of(self._pod)
        init_states = [_done_init(self._ctx.clock.wall()) for _ in init_containers_of(self._pod)]
        backoff = self._ctx.timings.image_pull_backoff_initial

        def states(failing: str) -> list[ContainerState]:
            result: list[ContainerState] = []
            for container in containers:
                image = str(container.get("image", ""))
                if container.get("name") not in plan.unpullable_containers:
                    result.append(Waiting(REASON_CONTAINER_CREATING))
                elif failing == REASON_ERR_IMAGE_PULL:
                    result.append(Waiting(REASON_ERR_IMAGE_PULL, image_pull_error_message(image)))
                else:
                    result.append(
                        Waiting(REASON_IMAGE_PULL_BACKOFF, image_pull_backoff_message(image))
                    )
            return result

        while not self._deleting():
            await self._report(
                init_states=init_states, states=states(REASON_ERR_IMAGE_PULL), pod_ip=pod_ip
            )
            if await self._wait_deletion(self._ctx.timings.image_pull_error_shown):
                return
            await self._report(
                init_states=init_states, states=states(REASON_IMAGE_PULL_BACKOFF), pod_ip=pod_ip
            )
            if await self._wait_deletion(backoff):
                return
            backoff = min(backoff * 2, self._ctx.timings.image_pull_backoff_max)

    # ------------------------------------------------------------------ configuration

    async def _prepare(self, plan: PodPlan, *, pod_ip: str) -> _Prepared | None:
        """Every container's environment and volumes (and the service-account files),
        waiting with CreateContainerConfigError while a ConfigMap/Secret its environment
        needs is missing, in ContainerCreating while one a volume needs is missing."""
        while not self._deleting():
            try:
                envs = await self._resolve_envs(pod_ip=pod_ip)
                mounts = await self._materialize_volumes()
                return _Prepared(envs=envs, mounts=mounts)
            except EnvResolutionError as error:
                reason = REASON_CREATE_CONTAINER_CONFIG_ERROR
                message = str(error)
            except _MountError as error:
                reason, message = REASON_CONTAINER_CREATING, str(error)
            self._log.warning("emulator_container_config_error", reason=reason, message=message)
            now = self._ctx.clock.wall()
            await self._report(
                init_states=[_done_init(now) for _ in init_containers_of(self._pod)],
                states=[Waiting(reason, message) for _ in containers_of(self._pod)],
                pod_ip=pod_ip,
            )
            await self._wait_deletion(self._ctx.timings.config_error_retry)
        return None

    async def _call(self, what: str, call: Any) -> Any:
        return await retry_until(
            call,
            what=what,
            give_up=lambda: self._deleting(),
            base_delay=self._ctx.timings.api_retry_base,
            max_delay=self._ctx.timings.api_retry_max,
        )

    async def _resolve_envs(self, *, pod_ip: str) -> list[dict[str, str]]:
        pod = self._pod
        containers = containers_of(pod)
        api = self._ctx.api
        wanted = referenced_sources(containers)
        config_maps: dict[str, Mapping[str, str] | None] = {}
        for name in sorted(wanted.config_maps):
            found = await self._call(
                f"configmap {self.namespace}/{name}",
                lambda name=name: api.read_config_map(namespace=self.namespace, name=name),
            )
            config_maps[name] = config_map_values(found) if found is not None else None
        secrets: dict[str, Mapping[str, str] | None] = {}
        for name in sorted(wanted.secrets):
            found = await self._call(
                f"secret {self.namespace}/{name}",
                lambda name=name: api.read_secret(namespace=self.namespace, name=name),
            )
            secrets[name] = secret_values(found) if found is not None else None
        allocatable: dict[str, str] = {}
        node_name = str((pod.get("spec") or {}).get("nodeName", ""))
        if needs_node_allocatable(containers):
            node = await self._call(f"node {node_name}", lambda: api.read_node(name=node_name))
            allocatable = dict(((node or {}).get("status") or {}).get("allocatable") or {})
        account_dir = await self._write_service_account_files(containers)
        sources = EnvSources(config_maps=config_maps, secrets=secrets)
        return [
            resolve_container_env(
                pod,
                container,
                pod_ip=pod_ip,
                host_ip="127.0.0.1",
                sources=sources,
                api_server=self._ctx.api_server,
                inherited=self._ctx.inherited_env,
                service_account_dir=(
                    str(account_dir)
                    if account_dir is not None and service_account_secret_name(pod, container)
                    else None
                ),
                node_allocatable=allocatable,
            )
            for container in containers
        ]

    async def _materialize_volumes(self) -> list[list[tuple[Path, str]]]:
        """Write the configMap and secret volumes the containers mount into the pod
        directory; per container, the (directory, mount path) pairs to mount."""
        containers = containers_of(self._pod)
        sources = pod_volume_sources(self._pod)
        per_container = [container_mounts(c, sources=sources) for c in containers]
        for mounts in per_container:
            for reason in mounts.ignored:
                self._log.warning("emulator_volume_mount_ignored", reason=reason)
        root = self.pod_dir / "volumes"
        fetched: dict[tuple[str, str], dict[str, bytes] | None] = {}
        for volume in sorted({m.volume for mounts in per_container for m in mounts.mounts}):
            source = sources[volume]
            key = (source.kind, source.name)
            if key not in fetched:
                read = (
                    self._ctx.api.read_config_map
                    if source.kind == "ConfigMap"
                    else self._ctx.api.read_secret
                )
                found = await self._call(
                    f"{source.kind.lower()} {self.namespace}/{source.name}",
                    lambda read=read, name=source.name: read(namespace=self.namespace, name=name),
                )
                fetched[key] = object_values(found, kind=source.kind) if found else None
            try:
                files = volume_files(source, fetched[key])
            except VolumeError as error:
                raise _MountError(str(error)) from error
            _write_volume(root / volume, files)
        return [
            [(root / mount.volume, mount.mount_path) for mount in mounts.mounts]
            for mounts in per_container
        ]

    async def _write_service_account_files(
        self, containers: Sequence[Mapping[str, Any]]
    ) -> Path | None:
        """token, ca.crt and namespace from the mounted token Secret, as the kubelet mounts
        them; None when no container mounts one (automountServiceAccountToken: false)."""
        secret_name = next(
            (
                name
                for container in containers
                if (name := service_account_secret_name(self._pod, container))
            ),
            None,
        )
        if secret_name is None:
            return None
        secret = await self._call(
            f"secret {self.namespace}/{secret_name}",
            lambda: self._ctx.api.read_secret(namespace=self.namespace, name=secret_name),
        )
        if secret is None:
            raise _MountError(
                f'MountVolume.SetUp failed for volume "{secret_name}" : '
                f'secret "{secret_name}" not found'
            )
        values = secret_values(secret)
        directory = self.pod_dir / "serviceaccount"
        directory.mkdir(parents=True, exist_ok=True)
        for key in ("token", "ca.crt", "namespace"):
            if key in values:
                target = directory / key
                partial = directory / f".{key}.tmp"
                partial.write_text(values[key], errors="surrogateescape")
                os.chmod(partial, 0o600)
                partial.replace(target)
        return directory

    # ------------------------------------------------------------------ running

    def _runner_for(
        self,
        index: int,
        container: Mapping[str, Any],
        *,
        plan: PodPlan,
        env: Mapping[str, str],
        mounts: Sequence[tuple[Path, str]],
    ) -> ContainerRunner:
        clock = self._ctx.clock
        name = str(container.get("name", f"container-{index}"))
        argv = expand_command(
            [*(container.get("command") or []), *(container.get("args") or [])], env
        )
        log_path = self.pod_dir / f"{name}.log"
        if plan.run_mode is RunMode.COROUTINE and index == 0:
            return CoroutineRunner(
                name=plan.workload,
                workload=self._ctx.workloads.get(plan.workload),
                env=env,
                command=argv,
                log_path=log_path,
                clock=clock,
                known=list(self._ctx.workloads),
            )
        if plan.run_mode is RunMode.PROCESS and argv:
            return ProcessRunner(
                argv=argv,
                env=env,
                cwd=self.pod_dir,
                log_path=log_path,
                clock=clock,
                mounts=mounts,
                scratch=self.pod_dir / "mountns" / name,
            )
        return PauseRunner(clock=clock)

    async def _run_containers(self, plan: PodPlan, *, pod_ip: str, prepared: _Prepared) -> None:
        clock = self._ctx.clock
        containers = containers_of(self._pod)
        init_states: list[ContainerState] = [
            _done_init(clock.wall()) for _ in init_containers_of(self._pod)
        ]
        if init_states:
            await self._report(
                init_states=init_states,
                states=[Waiting(REASON_POD_INITIALIZING) for _ in containers],
                pod_ip=pod_ip,
            )
        states: list[ContainerState] = []
        waits: dict[asyncio.Task[int], int] = {}
        runner_of: dict[int, ContainerRunner] = {}
        setups = zip(containers, prepared.envs, prepared.mounts, strict=True)
        for index, (container, env, mounts) in enumerate(setups):
            runner = self._runner_for(index, container, plan=plan, env=env, mounts=mounts)
            try:
                await runner.start()
            except CannotRun as error:
                now = clock.wall()
                states.append(
                    Terminated(error.exit_code, REASON_CANNOT_RUN, now, now, error.message)
                )
                self._log.warning(
                    "emulator_container_cannot_run",
                    container=container.get("name"),
                    message=error.message,
                )
                continue
            self._runners.append(runner)
            runner_of[index] = runner
            states.append(Running(runner.started_at or clock.wall()))
            waits[asyncio.create_task(runner.wait())] = index
        probes = self._readiness_probes(containers, runner_of=runner_of, pod_ip=pod_ip)
        probe_ready = [index not in probes for index in range(len(containers))]
        self._containers = _Containers(
            init_states=init_states,
            states=states,
            runner_of=runner_of,
            pod_ip=pod_ip,
            probe_ready=probe_ready,
        )
        await self._report(
            init_states=init_states, states=states, pod_ip=pod_ip, probe_ready=probe_ready
        )
        probing = {
            index: asyncio.create_task(
                run_readiness_probe(spec, on_change=self._readiness_reporter(index))
            )
            for index, spec in probes.items()
        }

        deletion = asyncio.create_task(self._deletion.wait())
        crash = (
            asyncio.create_task(asyncio.sleep(plan.crash_after))
            if plan.crash_after is not None
            else None
        )
        try:
            while waits and not self._deleting():
                watched: set[asyncio.Task[Any]] = {*waits, deletion}
                if crash is not None:
                    watched.add(crash)
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if crash is not None and crash in done:
                    await self._crash(plan, states=states, waits=waits, runner_of=runner_of)
                    waits.clear()
                else:
                    for task in [t for t in waits if t in done]:
                        index = waits.pop(task)
                        if index in probing:
                            probing.pop(index).cancel()  # no probes of a stopped container
                        code = task.result()
                        runner = runner_of[index]
                        states[index] = Terminated(
                            code,
                            terminated_reason(code),
                            runner.started_at,
                            runner.finished_at or clock.wall(),
                        )
                        self._log.info(
                            "emulator_container_exited",
                            container=containers[index].get("name"),
                            exit_code=code,
                        )
                # Reported during a deletion too (the kubelet does): a container that ends
                # just as its pod is deleted still shows its exit code.
                await self._report(
                    init_states=init_states,
                    states=states,
                    pod_ip=pod_ip,
                    final=not waits or self._deleting(),
                    probe_ready=probe_ready,
                )
        finally:
            leftovers: list[asyncio.Task[Any]] = [deletion, *waits, *probing.values()]
            if crash is not None:
                leftovers.append(crash)
            for leftover in leftovers:
                leftover.cancel()

    def _readiness_probes(
        self,
        containers: Sequence[Mapping[str, Any]],
        *,
        runner_of: Mapping[int, ContainerRunner],
        pod_ip: str,
    ) -> dict[int, ProbeSpec]:
        """The readiness probes to run, by container index: those of containers that run as
        processes. A container without a process (pause, an in-process workload) plays one
        that is healthy, so it is ready once started, as it always was here."""
        probes: dict[int, ProbeSpec] = {}
        for index, runner in runner_of.items():
            if not isinstance(runner, ProcessRunner):
                continue
            container = containers[index]
            try:
                spec = readiness_probe(container, pod_ip=pod_ip)
            except ProbeError as error:
                self._log.warning(
                    "emulator_probe_not_run", container=container.get("name"), problem=str(error)
                )
                continue
            if spec is not None:
                probes[index] = spec
        return probes

    def _readiness_reporter(self, index: int) -> Callable[[bool], Awaitable[None]]:
        """What a readiness probe calls when its result flips: report the new readiness."""

        async def report(ready: bool) -> None:
            containers = self._containers
            if containers is None or self._deleting():
                return
            containers.probe_ready[index] = ready
            with contextlib.suppress(_PodGone):  # the pod's own task finds that out too
                await self._report(
                    init_states=containers.init_states,
                    states=containers.states,
                    pod_ip=containers.pod_ip,
                    probe_ready=containers.probe_ready,
                )

        return report

    async def _crash(
        self,
        plan: PodPlan,
        *,
        states: list[ContainerState],
        waits: Mapping[asyncio.Task[int], int],
        runner_of: Mapping[int, ContainerRunner],
    ) -> None:
        """``emulator.rmd.dev/crash-after``: every running container dies with exit code 1."""
        message = f"{CRASH_AFTER_ANNOTATION}: crashed after {plan.crash_after:g}s"
        for index in waits.values():
            runner = runner_of[index]
            await runner.kill()
            states[index] = Terminated(
                1,
                REASON_ERROR,
                runner.started_at,
                runner.finished_at or self._ctx.clock.wall(),
                message,
            )
        self._log.info("emulator_pod_crashed", after=plan.crash_after)

    async def _adopt(self, plan: PodPlan) -> None:
        """A pod found Running when the emulator (re)started: its processes are gone."""
        status = self._pod.get("status") or {}
        pod_ip = str(status.get("podIP"))
        if not self._ctx.ips.reserve(pod_ip, owner=self.uid):
            self._log.warning("emulator_pod_ip_taken", pod_ip=pod_ip)
        if plan.run_mode is RunMode.PAUSE and plan.crash_after is None:
            self._runners = [PauseRunner(clock=self._ctx.clock) for _ in containers_of(self._pod)]
            for runner in self._runners:
                await runner.start()
            self._log.info("emulator_pod_adopted")
            await self._wait_deletion()
            return
        start = _parse_time(status.get("startTime")) or self._ctx.clock.wall()
        self._start_time = start
        now = self._ctx.clock.wall()
        message = "the node emulator restarted; the container's process is gone"
        await self._report(
            init_states=[_done_init(start) for _ in init_containers_of(self._pod)],
            states=[
                Terminated(EXIT_KILLED, REASON_UNKNOWN, start, now, message)
                for _ in containers_of(self._pod)
            ],
            pod_ip=pod_ip,
            final=True,
        )
        self._log.warning("emulator_pod_lost_on_restart")

    # ------------------------------------------------------------------ the end

    async def _kill_runners(self) -> None:
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await runner.kill()

    async def stop_runners(self, *, grace_seconds: float) -> None:
        """Stop every container (SIGTERM, then SIGKILL after ``grace_seconds``)."""
        results = await asyncio.gather(
            *(runner.stop(grace_seconds=grace_seconds) for runner in self._runners),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                self._log.error("emulator_stop_failed", error=repr(result))

    async def _report_stopped(self) -> None:
        """The kubelet's last status of a deleted pod: every container that still ran ends
        terminated with the exit code it had when stopped (143 after SIGTERM, 137 after
        SIGKILL, or its own), and the phase follows. Pods that run nothing (pause
        containers) are removed without it."""
        containers = self._containers
        if containers is None or self._gone or self._ctx.stopping:
            return
        if all(isinstance(runner, PauseRunner) for runner in containers.runner_of.values()):
            return
        now = self._ctx.clock.wall()
        for index, runner in containers.runner_of.items():
            if isinstance(containers.states[index], Running):
                code = await runner.wait()  # stopped: answers at once
                containers.states[index] = Terminated(
                    code, terminated_reason(code), runner.started_at, runner.finished_at or now
                )
        await self._report(
            init_states=containers.init_states,
            states=containers.states,
            pod_ip=containers.pod_ip,
            final=True,
            probe_ready=containers.probe_ready,
        )

    async def _finish(self) -> None:
        """Wait for the deletion, stop what runs, and delete the pod for good."""
        await self._wait_deletion()
        grace = self._grace_seconds()
        if self._runners:
            self._log.info("emulator_pod_stopping", grace_seconds=grace)
            await self.stop_runners(grace_seconds=grace)
            with contextlib.suppress(_PodGone):
                await self._report_stopped()
        shutil.rmtree(self.pod_dir / "serviceaccount", ignore_errors=True)
        shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)
        shutil.rmtree(self.pod_dir / "mountns", ignore_errors=True)
        while not self._gone:
            try:
                deleted = await retry_until(
                    lambda: self._ctx.api.delete_pod_now(
                        namespace=self.namespace, name=self.name, uid=self.uid
                    ),
                    what=f"delete pod {self.namespace}/{self.name}",
                    give_up=lambda: self._gone,
                    base_delay=self._ctx.timings.api_retry_base,
                    max_delay=self._ctx.timings.api_retry_max,
                )
            except ApiGaveUp:
                break
            except ApiException as error:
                self._log.error(
                    "emulator_delete_failed", status=error.status, error=api_error_message(error)
                )
                await asyncio.sleep(self._ctx.timings.api_retry_max)
                continue
            self._log.info("emulator_pod_deleted", by_us=deleted)
            break


class _MountError(Exception):
    """A volume the kubelet would mount is missing (the pod waits in ContainerCreating)."""


@dataclass(frozen=True)
class _Prepared:
    """What the containers start with, by container: environment and volume mounts."""

    envs: list[dict[str, str]]
    mounts: list[list[tuple[Path, str]]]


def _write_volume(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """The volume's files in ``directory``, replacing what was there."""
    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for relative, (content, mode) in files.items():
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chmod(path, mode)
    shutil.rmtree(directory, ignore_errors=True)
    staging.replace(directory)


def _done_init(at: float) -> Terminated:
    return Terminated(0, "Completed", at, at)


def _describe(state: ContainerState) -> str:
    if isinstance(state, Waiting):
        return f"waiting:{state.reason}"
    if isinstance(state, Running):
        return "running"
    return f"terminated:{state.exit_code}"


def _resource_version(pod: Pod) -> int:
    try:
        return int((pod.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
