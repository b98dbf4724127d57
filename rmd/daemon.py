"""``rmd daemon``: wires configuration, the Kubernetes edge, the engine and the HTTP API.

Start-up order: configuration is read and validated completely (a bad value stops here with
one line, before anything touches the cluster); then the Kubernetes client, the permission
check (:mod:`rmd.kube.permissions`: a missing permission stops here with one line), the JobManager
Deployment as owner, the ``flink-config-<cluster-id>`` ConfigMap the TaskManagers mount (when
rmd starts Flink's TaskManagers; :mod:`rmd.kube.flinkconfigmap`), the HTTP server
(``/healthz`` answers at once, ``/v1`` answers 503 until recovery is done), the start-up
recovery (:func:`rmd.recovery.recover`: the stored demand and assignments, then the pods),
then the pod watch, the timers, the writer of the state (:mod:`rmd.statewriter`) and, with
``rmd.flink.rest-url``, the follower of Flink's REST API (:mod:`rmd.flink.follower`).
SIGTERM/SIGINT: stop
accepting, finish in-flight requests, write the state's last changes (at most 3 s), stop the
watch, close the Kubernetes session. The
TaskManager pods are left running for the next start to adopt.

With high availability (``high-availability.type: KUBERNETES``) the daemon starts as a
standby: it watches the pods (a warm view) and answers /v1 with 503 and the leader's address
until the Lease election (:mod:`rmd.kube.lease`) makes it the leader; then it adopts the pods
at once and follows Flink. A leader that loses the Lease stops writing and exits (code 1).

In an application cluster (``execution.target: kubernetes-application``) the follower tells
when the application has ended; then, unless ``execution.shutdown-on-application-finish`` is
false, the daemon deletes its own Deployment and so the whole cluster, itself included
(:mod:`rmd.application_cluster`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from rmd import eventloop
from rmd.api.access_log import StructlogAccessLogger
from rmd.api.app import create_app
from rmd.api.server import ApiRunner
from rmd.api.tokens import BearerTokens
from rmd.application_cluster import ApplicationClusterEnd
from rmd.cli_options import add_configuration_arguments
from rmd.config import options as opt
from rmd.config.files import CONFIG_YAML, configuration_directory
from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.podoptions import taskmanager_arguments
from rmd.config.settings import RmdSettings
from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import Clock, SystemClock
from rmd.core.leadership import Election, ElectionTimings
from rmd.core.model import TaskManagerView, UnknownTaskManager
from rmd.core.recovery import StateSnapshot
from rmd.driver import DaemonEngine
from rmd.flink.application import ApplicationEnd
from rmd.flink.follower import FlinkFollower
from rmd.flink.launch_plan import PLAN_FILE
from rmd.flink.launch_recording import (
    JAVA_OPTIONS_KEYS,
    PID_DIR_KEY,
    REDIRECT_KEY,
    RecordingRefused,
    record_launch_plan,
)
from rmd.flink.rest import FlinkRestClient
from rmd.flink.taskmanager_memory import (
    JAVA_HOME_KEY,
    TaskManagerMemoryError,
    precompute_taskmanager_memory,
)
from rmd.kube.client import KubeConfigError, api_client, load_kube_configuration
from rmd.kube.eventcorrelation import EventCorrelator, InvolvedObject
from rmd.kube.events import EventRecorder
from rmd.kube.flinkconfigmap import (
    ConfigMapPublishError,
    FlinkConfigMap,
    flink_config_map,
    publish_flink_config_map,
    read_log_config_files,
)
from rmd.kube.lease import (
    LeaderElector,
    LeadershipLost,
    advertised_url,
    candidate_identity,
    field_manager_name,
    lease_name,
)
from rmd.kube.owner import find_owner_reference, owner_exists
from rmd.kube.permissions import MissingPermission, check_daemon_permissions, needs_for
from rmd.kube.pods import PodGateway
from rmd.kube.podspec import (
    LABEL_APP,
    LABEL_TYPE,
    OwnerReference,
    TaskManagerPodFactory,
    selector_string,
)
from rmd.kube.reflector import ReflectorTimings
from rmd.kube.reporter import KubeReporter
from rmd.kube.statelabel import PodStateLabeler
from rmd.kube.statestore import ConfigMapStateStore
from rmd.kube.watch import PodWatcher
from rmd.kube.writehealth import WriteHealth
from rmd.logs import configure_logging
from rmd.metrics import FlinkMetrics, ReporterMetrics, RmdMetrics
from rmd.recovery import recover
from rmd.statewriter import StateWriter

log = structlog.get_logger("rmd.daemon")

SHUTDOWN_TIMEOUT = 15.0  # below Kubernetes' default 30 s termination grace period
FINAL_WRITE_TIMEOUT = 3.0  # the state's last write on the way out, within that grace period


class ListenError(RuntimeError):
    """The HTTP API cannot bind its address (port taken, address not on this host)."""


@dataclass(frozen=True)
class DaemonConfig:
    """Everything the daemon needs, validated before it touches the cluster."""

    conf: FlinkConfiguration
    settings: RmdSettings
    pods: TaskManagerPodFactory
    auth_token: str | None
    # The Flink configuration for the TaskManagers; None when rmd does not start Flink
    # (rmd.taskmanager.supervise-flink off).
    flink_config_map: FlinkConfigMap | None = None
    # Why the TaskManager pods compute their JVM memory options themselves (taskmanager.sh's
    # helper JVM) instead of getting them from the daemon; None when they get them.
    memory_not_precomputed: str | None = None
    # Why the TaskManager pods run Flink's scripts instead of the daemon's launch plan
    # (rmd.flink.launch_plan); None when the ConfigMap carries one.
    launch_not_planned: str | None = None


def allocator_settings(settings: RmdSettings) -> AllocatorSettings:
    return AllocatorSettings(
        cluster_id=settings.cluster_id,
        slots_per_taskmanager=settings.slots_per_taskmanager,
        idle_timeout=settings.idle_timeout,
        registration_timeout=settings.registration_timeout,
        recovery_timeout=settings.recovery_timeout,
        heartbeat_timeout=settings.heartbeat_timeout,
        max_start_failures_per_minute=settings.max_start_failures_per_minute,
        start_retry_interval=settings.start_retry_interval,
        max_slots=settings.max_slots,
        redundant_taskmanagers=settings.redundant_taskmanagers,
        # Following Flink: a TaskManager goes only when Flink, too, says it is idle.
        external_usage_gate=settings.flink_rest_url is not None,
    )


def read_auth_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"rmd.auth.token-file: cannot read {str(path)!r} ({exc.strerror}); "
            "point it at a readable file holding the bearer token",
            key="rmd.auth.token-file",
        ) from exc
    if not token:
        raise ConfigError(
            f"rmd.auth.token-file: {str(path)!r} is empty; put the bearer token in it",
            key="rmd.auth.token-file",
        )
    return token


def load_daemon_config(
    *,
    conf_dir: Path | None,
    overrides: Sequence[str],
    environ: Mapping[str, str] | None = None,
) -> DaemonConfig:
    """Read and validate everything; raises ConfigError with one line naming key and fix.

    With Flink's TaskManager supervised and Flink beside the daemon (``$FLINK_HOME`` in
    ``environ``, default ``os.environ``), Flink's own code computes the TaskManagers' JVM
    memory options here, once (one helper JVM); a memory configuration Flink refuses is a
    ConfigError with Flink's message."""
    environ = os.environ if environ is None else environ
    conf = FlinkConfiguration.load(conf_dir=conf_dir, overrides=overrides)
    settings = RmdSettings.from_configuration(conf)
    pods = TaskManagerPodFactory.from_configuration(conf, settings)
    token = read_auth_token(settings.auth_token_file)
    config_map = None
    not_precomputed: str | None = "rmd.taskmanager.supervise-flink is off"
    not_planned: str | None = not_precomputed
    if settings.supervise_flink:
        config_map = flink_config_map(
            conf,
            settings,
            log_files=read_log_config_files(configuration_directory(conf_dir)),
            environ=environ,
            taskmanager_pod_template=pods.pod_template_text,
        )
        try:
            precomputed = precompute_taskmanager_memory(
                environ=environ,
                java_home_setting=conf.get_str(JAVA_HOME_KEY),
                config_yaml=config_map.data[CONFIG_YAML],
                arguments=taskmanager_arguments(conf, settings),
            )
        except TaskManagerMemoryError as error:
            raise ConfigError(str(error), key="taskmanager.memory.process.size") from None
        not_precomputed = precomputed.skipped_because
        if precomputed.memory is not None:
            pods = TaskManagerPodFactory.from_configuration(
                conf, settings, memory=precomputed.memory
            )
            not_planned = "rmd.taskmanager.launch-plan is off"
            if settings.launch_plan:
                try:
                    plan = record_launch_plan(
                        flink_home=Path(environ["FLINK_HOME"].strip()),
                        conf_files={CONFIG_YAML: config_map.data[CONFIG_YAML]},
                        pod_env=pods.container_env(),
                        image_env=environ,
                        conf_dir=conf.get(opt.CONF_DIR),
                        java_home_setting=conf.get_str(JAVA_HOME_KEY) or "",
                        pid_dir_setting=conf.get_str(PID_DIR_KEY) or "",
                        java_options=[conf.get_str(key) or "" for key in JAVA_OPTIONS_KEYS],
                        redirect_to_file=(conf.get_str(REDIRECT_KEY) or "").lower() == "true",
                    )
                except RecordingRefused as error:
                    not_planned = str(error)
                else:
                    not_planned = None
                    config_map = dataclasses.replace(
                        config_map, data={**config_map.data, PLAN_FILE: plan.to_json()}
                    )
        else:
            not_planned = "the JVM memory options are not precomputed"
    return DaemonConfig(
        conf=conf,
        settings=settings,
        pods=pods,
        auth_token=token,
        flink_config_map=config_map,
        memory_not_precomputed=not_precomputed,
        launch_not_planned=not_planned,
    )


async def serve(
    config: DaemonConfig,
    *,
    stop: asyncio.Event,
    clock: Clock | None = None,
    kubeconfig: Path | None = None,
    on_started: Callable[[int], None] | None = None,
) -> None:
    """Run the daemon until ``stop`` is set. ``on_started(port)`` fires once it listens."""
    clock = clock or SystemClock()
    settings = config.settings
    kube_cfg = await load_kube_configuration(kubeconfig=kubeconfig)
    async with api_client(kube_cfg) as api:
        # Before anything is done: may it do all it needs? (MissingPermission stops it.)
        await check_daemon_permissions(
            api,
            needs_for(settings),
            namespace=settings.namespace,
            timeout=settings.api_request_timeout,
            max_parallel=settings.max_parallel_creates,
        )
        owner: OwnerReference | None = None
        try:
            found = await find_owner_reference(
                api,
                namespace=settings.namespace,
                deployment=settings.cluster_id,
                timeout=settings.api_request_timeout,
            )
            if found is not None:
                owner = OwnerReference(
                    api_version=found.api_version, kind=found.kind, name=found.name, uid=found.uid
                )
        except client.ApiException as exc:
            log.warning(
                "owner_lookup_failed",
                status=exc.status,
                deployment=settings.cluster_id,
                fix="grant 'get' on deployments.apps to the daemon's service account",
                consequence="TaskManager pods get no owner reference",
            )
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            # The API server did not answer within the retries: no reason to stop the daemon
            # (its watch and creates ride out the outage); only the owner reference is missing.
            log.warning(
                "owner_lookup_failed",
                error=repr(exc),
                deployment=settings.cluster_id,
                consequence="TaskManager pods get no owner reference (API server unreachable)",
            )
        registry = CollectorRegistry()
        allocator = Allocator(allocator_settings(settings), clock=clock)
        metrics = RmdMetrics(registry=registry, status=allocator.status)
        metrics.count_tasks_of(asyncio.get_running_loop())
        leading = asyncio.Event()  # set while this daemon leads (at once without HA)

        def on_leading(now_leading: bool) -> None:
            metrics.leadership(leading=now_leading)
            if now_leading:
                leading.set()  # the recovery task starts: state, pods, then decisions
            else:
                leading.clear()

        identity = candidate_identity()  # the Lease holder's name and the writes' fieldManager

        async def publish_flink_config() -> None:
            """Only the leader writes: a standby (maybe a newer version with another
            configuration, in a rolling update) must not change the pods' configuration."""
            if config.flink_config_map is None:
                return
            outcome = await publish_flink_config_map(
                api,
                config.flink_config_map,
                owner=owner,
                timeout=settings.api_request_timeout,
                field_manager=field_manager_name(identity),
            )
            log.info(
                "flink_config_published",
                configmap=config.flink_config_map.name,
                outcome=outcome,
                keys=sorted(config.flink_config_map.data),
            )

        elector = _leader_elector(
            api,
            settings,
            identity=identity,
            owner=owner,
            clock=clock,
            selector=config.pods.selector_labels,
            on_leading=on_leading,
        )
        if elector is None:
            leading.set()
        else:
            metrics.leadership(leading=False, transition=False)
        write_health = WriteHealth(clock=clock)
        metrics.follow_write_health(lambda: write_health.unanswered() is not None)
        gateway = PodGateway(
            api,
            namespace=settings.namespace,
            max_parallel=settings.max_parallel_creates,
            request_timeout=settings.api_request_timeout,
            on_api_error=lambda status: metrics.api_error(status=status),
            on_request=metrics.api_request,
            may_write=None if elector is None else elector.may_write,
            write_health=write_health,
            field_manager=field_manager_name(identity),
        )

        def build_pod(*, pod_name: str) -> dict[str, Any]:
            return config.pods.build(pod_name=pod_name, owner=owner)

        async def owner_still_exists() -> bool:
            assert owner is not None
            return await owner_exists(
                api, namespace=settings.namespace, owner=owner, timeout=settings.api_request_timeout
            )

        reporter, labeler, events = _kube_reporter(
            api,
            settings=settings,
            allocator=allocator,
            gateway=gateway,
            owner=owner,
            clock=clock,
            metrics=ReporterMetrics(registry=registry),
        )
        store = ConfigMapStateStore(
            api,
            namespace=settings.namespace,
            cluster_id=settings.cluster_id,
            owner=owner,
            timeout=settings.api_request_timeout,
            on_api_error=lambda status: metrics.api_error(status=status),
            may_write=None if elector is None else elector.may_write,
            field_manager=field_manager_name(identity),
            on_size=metrics.state_size,
        )
        writer = StateWriter(
            snapshot=allocator.state_snapshot,
            generation=allocator.state_generation,
            store=store,
            metrics=metrics,
        )
        engine = DaemonEngine(
            allocator=allocator,
            pods=gateway,
            build_pod=build_pod,
            metrics=metrics,
            clock=clock,
            owner_exists=None if owner is None else owner_still_exists,
            owner_name=None if owner is None else owner.name,
            reporter=reporter,
            on_change=writer.changed,
            standby=elector is not None,
        )

        def list_started() -> None:
            metrics.watch_listed()
            engine.on_list_started()

        watcher = PodWatcher(
            api,
            namespace=settings.namespace,
            label_selector=selector_string(config.pods.selector_labels),
            on_event=engine.on_pod_event,
            on_snapshot=engine.on_snapshot,
            timings=ReflectorTimings(
                resync_interval=settings.watch_resync_interval,
                read_timeout=settings.watch_idle_timeout,
            ),
            on_restart=lambda reason: metrics.watch_restarted(reason=reason),
            on_list_started=list_started,
            on_request=metrics.api_request,
        )
        engine.set_watch_synced_probe(lambda: watcher.synced)
        ending = ApplicationClusterEnd(api, settings, owner=owner)
        flink_session, follower = _flink_follower(
            settings,
            engine=engine,
            clock=clock,
            registry=registry,
            on_application_end=ending if settings.application_mode else None,
        )
        if settings.application_mode and follower is None:
            log.warning(
                "application_end_not_followed",
                detail="execution.target is kubernetes-application but rmd.flink.rest-url is "
                "unset: the daemon cannot see the application end and will not remove the "
                "cluster; set rmd.flink.rest-url (rmd application start does)",
            )

        # Until recovery is done, /v1 answers 503 with Retry-After, so that neither a
        # declaration nor a registration races it. A declaration is answered once stored.
        app = create_app(
            engine=engine,
            metrics=metrics,
            auth_tokens=None
            if config.auth_token is None
            else BearerTokens(config.auth_token, clock=clock, path=settings.auth_token_file),
            refuse_v1_until_ready=True,
            flink_status=None if follower is None else follower.status,
            state_stored=writer.stored,
            leadership=elector,
            kube_writes=lambda: _unanswered_writes(write_health, clock),
        )
        runner = ApiRunner(
            app, access_log_class=StructlogAccessLogger, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        site = web.TCPSite(runner, settings.rest_address, settings.rest_port)
        background: list[asyncio.Task[Any]] = []
        lost: LeadershipLost | None = None
        unpublished: ConfigMapPublishError | None = None  # ends the daemon like before
        try:
            try:
                await site.start()
            except OSError as exc:
                raise ListenError(
                    f"cannot listen on {settings.rest_address}:{settings.rest_port} "
                    f"({exc.strerror}); change rmd.rest.port or rmd.rest.address"
                ) from exc
            port = _bound_port(runner) or settings.rest_port
            log.info(
                "daemon_started",
                cluster_id=settings.cluster_id,
                namespace=settings.namespace,
                address=settings.rest_address,
                port=port,
                owner=owner.name if owner else None,
                standby=elector is not None,
                field_manager=field_manager_name(identity),
            )
            if elector is not None:
                elector.set_url(advertised_url(rest_address=settings.rest_address, port=port))
            if on_started is not None:
                on_started(port)
            stopped = asyncio.create_task(stop.wait())
            flusher = asyncio.create_task(events.run_flusher(), name="event-flusher")
            background = [flusher]
            if elector is not None:
                # A standby keeps a warm view of the pods from the watch and waits for the Lease.
                background.append(asyncio.create_task(watcher.run(), name="pod-watch"))
                background.append(asyncio.create_task(elector.run(), name="leader-election"))
            recovering = asyncio.create_task(
                _recover_when_leading(
                    leading,
                    engine=engine,
                    store=store,
                    pods=gateway,
                    label_selector=selector_string(config.pods.selector_labels),
                    clock=clock,
                    standby=elector is not None,
                    before=publish_flink_config,
                ),
                name="recovery",
            )
            done, _ = await asyncio.wait(
                [stopped, recovering, *background], return_when=asyncio.FIRST_COMPLETED
            )
            if recovering in done and recovering.exception() is None:
                stored = recovering.result()  # None: the state cannot be kept (RBAC)
                writer.assume_stored(stored)
                background.append(asyncio.create_task(engine.run_timers(), name="timers"))
                if elector is None:
                    background.append(asyncio.create_task(watcher.run(), name="pod-watch"))
                if stored is not None:
                    background.append(asyncio.create_task(writer.run(), name="state-writer"))
                if follower is not None:
                    background.append(asyncio.create_task(follower.run(), name="flink-follower"))
                done, _ = await asyncio.wait(
                    [stopped, *background], return_when=asyncio.FIRST_COMPLETED
                )
            else:
                background.append(recovering)
            for task in done:
                error = None if task is stopped else task.exception()
                if isinstance(error, LeadershipLost):
                    lost = error
                    await engine.close()  # cancel in-flight creates and deletes at once
                elif isinstance(error, ConfigMapPublishError):
                    unpublished = error
                elif error is not None:
                    log.error("background_task_failed", task=task.get_name(), error=repr(error))
            stopped.cancel()
            reason = "signal" if stop.is_set() else "leadership lost" if lost else "task failed"
            log.info("daemon_stopping", reason=reason)
        finally:
            await runner.cleanup()  # stop accepting, let in-flight requests finish
            if lost is None and any(
                task.get_name() == "state-writer" and not task.done() for task in background
            ):
                # The last changes (e.g. slots handed out a moment ago) go with us.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FINAL_WRITE_TIMEOUT):
                        await writer.stored()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await ending.close()
            await engine.close()
            await labeler.close()
            await events.close()
            if elector is not None and lost is None:
                await elector.release()  # nothing is written any more: a follower may lead
            if flink_session is not None:
                await flink_session.close()
            log.info("daemon_stopped", taskmanagers_left=len(allocator.taskmanager_views()))
        if lost is not None:
            raise lost
        if unpublished is not None:
            raise unpublished  # one line and exit 1 (run_daemon)


def _leader_elector(
    api: client.ApiClient,
    settings: RmdSettings,
    *,
    identity: str,
    owner: OwnerReference | None,
    clock: Clock,
    selector: Mapping[str, str],
    on_leading: Callable[[bool], None],
) -> LeaderElector | None:
    """The Lease election, with high-availability.type KUBERNETES; else None (no Lease call)."""
    if not settings.leader_election:
        return None
    election = Election(
        identity=identity,
        url="",  # set once the HTTP server listens
        timings=ElectionTimings(
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
        ),
        clock=clock,
    )
    return LeaderElector(
        api,
        election=election,
        namespace=settings.namespace,
        name=lease_name(settings.cluster_id),
        labels={key: value for key, value in selector.items() if key in (LABEL_TYPE, LABEL_APP)},
        owner=owner,
        clock=clock,
        request_timeout=settings.api_request_timeout,
        on_leading=on_leading,
    )


async def _recover_when_leading(
    leading: asyncio.Event,
    *,
    engine: DaemonEngine,
    store: ConfigMapStateStore,
    pods: PodGateway,
    label_selector: str,
    clock: Clock,
    standby: bool,
    before: Callable[[], Awaitable[None]],
) -> StateSnapshot | None:
    """The start-up recovery, once this daemon leads (at once without high availability); a
    standby that became the leader adopts the pods its running watch shows. ``before``: the
    leader's first writes (the flink-config ConfigMap), before any pod can be created."""
    await leading.wait()
    await before()
    return await recover(
        engine=engine,
        store=store,
        pods=pods,
        label_selector=label_selector,
        clock=clock,
        warm_view=engine.warm_view if standby else None,
    )


def _kube_reporter(
    api: client.ApiClient,
    *,
    settings: RmdSettings,
    allocator: Allocator,
    gateway: PodGateway,
    owner: OwnerReference | None,
    clock: Clock,
    metrics: ReporterMetrics,
) -> tuple[KubeReporter, PodStateLabeler, EventRecorder]:
    """The pods' state label and the Kubernetes Events (what kubectl shows of rmd)."""
    labeler = PodStateLabeler(patch_labels=gateway.patch_labels, on_patch=metrics.label_patch)
    events = EventRecorder(
        api,
        namespace=settings.namespace,
        correlator=EventCorrelator(clock=clock),
        clock=clock,
        instance=os.environ.get("HOSTNAME") or socket.gethostname(),
        request_timeout=settings.api_request_timeout,
        api_slots=gateway.slots,
        on_written=metrics.event_written,
        on_dropped=metrics.event_dropped,
    )

    def taskmanager(name: str) -> TaskManagerView | None:
        try:
            return allocator.taskmanager_view(name)
        except UnknownTaskManager:
            return None

    deployment = None
    if owner is not None:
        deployment = InvolvedObject(
            kind=owner.kind, name=owner.name, uid=owner.uid, api_version=owner.api_version
        )
    reporter = KubeReporter(
        labeler=labeler,
        record_event=events.record,
        taskmanager=taskmanager,
        waiting_jobs=allocator.jobs_waiting,
        deployment=deployment,
    )
    return reporter, labeler, events


def _flink_follower(
    settings: RmdSettings,
    *,
    engine: DaemonEngine,
    clock: Clock,
    registry: CollectorRegistry,
    on_application_end: Callable[[ApplicationEnd], None] | None = None,
) -> tuple[aiohttp.ClientSession | None, FlinkFollower | None]:
    """The follower of Flink's REST API and its HTTP session, when rmd.flink.rest-url is set."""
    if settings.flink_rest_url is None:
        return None, None
    session = aiohttp.ClientSession()
    rest = FlinkRestClient(
        session, base_url=settings.flink_rest_url, request_timeout=settings.flink_request_timeout
    )
    follower = FlinkFollower(
        engine=engine,
        rest=rest,
        clock=clock,
        poll_interval=settings.flink_poll_interval,
        usage_interval=settings.flink_usage_poll_interval,
        metrics=FlinkMetrics(registry=registry),
        on_application_end=on_application_end,
    )
    return session, follower


def _unanswered_writes(health: WriteHealth, clock: Clock) -> str | None:
    unanswered = health.unanswered()
    return None if unanswered is None else unanswered.detail(now=clock.monotonic())


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmd daemon", description="Run the resource manager in the foreground."
    )
    add_configuration_arguments(parser)
    parser.add_argument(
        "--kubeconfig", type=Path, default=None, help="kubeconfig file (default: as kubectl)"
    )
    return parser


def run_daemon(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        config = load_daemon_config(conf_dir=args.conf_dir, overrides=args.overrides)
    except ConfigError as exc:
        print(f"rmd daemon: {exc}", file=sys.stderr)
        return 2
    configure_logging(level=config.settings.log_level)
    for warning in config.conf.warnings:
        log.warning("configuration_warning", detail=warning)
    log.info("configuration", **config.settings.describe())
    log.info("event_loop", loop=eventloop.loop_name())
    if config.memory_not_precomputed is None:
        log.info("taskmanager_memory_precomputed", command=list(config.pods.options.command))
    else:
        log.info(
            "taskmanager_memory_not_precomputed",
            reason=config.memory_not_precomputed,
            consequence="each TaskManager pod's taskmanager.sh computes it (one more JVM)",
        )
    if config.launch_not_planned is None:
        log.info("taskmanager_launch_planned", file=PLAN_FILE)
    elif config.settings.supervise_flink:
        log.info(
            "taskmanager_launch_not_planned",
            reason=config.launch_not_planned,
            consequence="each TaskManager pod runs Flink's scripts (two helper JVMs)",
        )
    try:
        eventloop.run(_main(config, kubeconfig=args.kubeconfig))
    except KubeConfigError as exc:
        print(f"rmd daemon: {exc}", file=sys.stderr)
        return 2
    except (ConfigMapPublishError, MissingPermission) as exc:
        print(f"rmd daemon: {exc}", file=sys.stderr)
        return 1
    except LeadershipLost as exc:
        print(
            f"rmd daemon: {exc}; stopped creating and deleting pods and exits, so that its "
            "Deployment restarts it as a standby",
            file=sys.stderr,
        )
        return 1
    except ListenError as exc:
        print(f"rmd daemon: {exc}", file=sys.stderr)
        return 1
    return 0


async def _main(config: DaemonConfig, *, kubeconfig: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve(config, stop=stop, kubeconfig=kubeconfig)
