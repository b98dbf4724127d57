"""``rmd daemon``: wires configuration, the Kubernetes edge, the engine and the HTTP API.

Start-up order: configuration is read and validated completely (a bad value stops here with
one line, before anything touches the cluster); then the Kubernetes client, the JobManager
Deployment as owner, the ``flink-config-<cluster-id>`` ConfigMap the TaskManagers mount (when
rmd starts Flink's TaskManagers; :mod:`rmd.kube.flinkconfigmap`), the HTTP server
(``/healthz`` answers at once, ``/v1`` answers 503 until the first pod list has been
adopted), the pod watch, the timers and, with ``rmd.flink.rest-url``, the follower of Flink's
REST API (:mod:`rmd.flink.follower`). SIGTERM/SIGINT: stop
accepting, finish in-flight requests, stop the watch, close the Kubernetes session. The
TaskManager pods are left running for the next start to adopt.

In an application cluster (``execution.target: kubernetes-application``) the follower tells
when the application has ended; then, unless ``execution.shutdown-on-application-finish`` is
false, the daemon deletes its own Deployment and so the whole cluster, itself included
(:mod:`rmd.application_cluster`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from rmd.api.access_log import StructlogAccessLogger
from rmd.api.app import create_app
from rmd.application_cluster import ApplicationClusterEnd
from rmd.cli_options import add_configuration_arguments
from rmd.config.files import configuration_directory
from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.settings import RmdSettings
from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import Clock, SystemClock
from rmd.driver import DaemonEngine
from rmd.flink.application import ApplicationEnd
from rmd.flink.follower import FlinkFollower
from rmd.flink.rest import FlinkRestClient
from rmd.kube.client import KubeConfigError, load_kube_configuration
from rmd.kube.flinkconfigmap import (
    ConfigMapPublishError,
    FlinkConfigMap,
    flink_config_map,
    publish_flink_config_map,
    read_log_config_files,
)
from rmd.kube.owner import find_owner_reference, owner_exists
from rmd.kube.pods import PodGateway
from rmd.kube.podspec import OwnerReference, TaskManagerPodFactory, selector_string
from rmd.kube.reflector import ReflectorTimings
from rmd.kube.watch import PodWatcher
from rmd.logs import configure_logging
from rmd.metrics import FlinkMetrics, RmdMetrics

log = structlog.get_logger("rmd.daemon")

SHUTDOWN_TIMEOUT = 15.0  # below Kubernetes' default 30 s termination grace period


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


def allocator_settings(settings: RmdSettings) -> AllocatorSettings:
    return AllocatorSettings(
        cluster_id=settings.cluster_id,
        slots_per_taskmanager=settings.slots_per_taskmanager,
        idle_timeout=settings.idle_timeout,
        registration_timeout=settings.registration_timeout,
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


def load_daemon_config(*, conf_dir: Path | None, overrides: Sequence[str]) -> DaemonConfig:
    """Read and validate everything; raises ConfigError with one line naming key and fix."""
    conf = FlinkConfiguration.load(conf_dir=conf_dir, overrides=overrides)
    settings = RmdSettings.from_configuration(conf)
    pods = TaskManagerPodFactory.from_configuration(conf, settings)
    token = read_auth_token(settings.auth_token_file)
    config_map = None
    if settings.supervise_flink:
        config_map = flink_config_map(
            conf,
            settings,
            log_files=read_log_config_files(configuration_directory(conf_dir)),
            environ=os.environ,
        )
    return DaemonConfig(
        conf=conf, settings=settings, pods=pods, auth_token=token, flink_config_map=config_map
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
    async with client.ApiClient(kube_cfg) as api:
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
        if config.flink_config_map is not None:
            outcome = await publish_flink_config_map(
                api,
                config.flink_config_map,
                owner=owner,
                timeout=settings.api_request_timeout,
            )
            log.info(
                "flink_config_published",
                configmap=config.flink_config_map.name,
                outcome=outcome,
                keys=sorted(config.flink_config_map.data),
            )

        registry = CollectorRegistry()
        allocator = Allocator(allocator_settings(settings), clock=clock)
        metrics = RmdMetrics(registry=registry, status=allocator.status)
        gateway = PodGateway(
            api,
            namespace=settings.namespace,
            max_parallel=settings.max_parallel_creates,
            request_timeout=settings.api_request_timeout,
            on_api_error=lambda status: metrics.api_error(status=status),
        )

        def build_pod(*, pod_name: str) -> dict[str, Any]:
            return config.pods.build(pod_name=pod_name, owner=owner)

        async def owner_still_exists() -> bool:
            assert owner is not None
            return await owner_exists(
                api, namespace=settings.namespace, owner=owner, timeout=settings.api_request_timeout
            )

        engine = DaemonEngine(
            allocator=allocator,
            pods=gateway,
            build_pod=build_pod,
            metrics=metrics,
            clock=clock,
            owner_exists=None if owner is None else owner_still_exists,
            owner_name=None if owner is None else owner.name,
        )
        watcher = PodWatcher(
            api,
            namespace=settings.namespace,
            label_selector=selector_string(config.pods.selector_labels),
            on_event=engine.on_pod_event,
            on_snapshot=engine.on_snapshot,
            timings=ReflectorTimings(resync_interval=settings.watch_resync_interval),
            on_restart=lambda reason: metrics.watch_restarted(reason=reason),
            on_list_started=engine.on_list_started,
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

        # Until the first pod list is adopted, /v1 answers 503 with Retry-After, so that
        # neither a declaration nor a registration races recovery.
        app = create_app(
            engine=engine,
            metrics=metrics,
            auth_token=config.auth_token,
            refuse_v1_until_ready=True,
            flink_status=None if follower is None else follower.status,
        )
        runner = web.AppRunner(
            app, access_log_class=StructlogAccessLogger, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        site = web.TCPSite(runner, settings.rest_address, settings.rest_port)
        background: list[asyncio.Task[None]] = []
        try:
            await site.start()
            port = _bound_port(runner) or settings.rest_port
            log.info(
                "daemon_started",
                cluster_id=settings.cluster_id,
                namespace=settings.namespace,
                address=settings.rest_address,
                port=port,
                owner=owner.name if owner else None,
            )
            background = [
                asyncio.create_task(watcher.run(), name="pod-watch"),
                asyncio.create_task(engine.run_timers(), name="timers"),
            ]
            if follower is not None:
                background.append(asyncio.create_task(follower.run(), name="flink-follower"))
            if on_started is not None:
                on_started(port)
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                [stopped, *background], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopped and task.exception() is not None:
                    log.error(
                        "background_task_failed", task=task.get_name(), error=repr(task.exception())
                    )
            stopped.cancel()
            log.info("daemon_stopping", reason="signal" if stop.is_set() else "task failed")
        finally:
            await runner.cleanup()  # stop accepting, let in-flight requests finish
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await ending.close()
            await engine.close()
            if flink_session is not None:
                await flink_session.close()
            log.info("daemon_stopped", taskmanagers_left=len(allocator.taskmanager_views()))


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
        metrics=FlinkMetrics(registry=registry),
        on_application_end=on_application_end,
    )
    return session, follower


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
    try:
        asyncio.run(_main(config, kubeconfig=args.kubeconfig))
    except KubeConfigError as exc:
        print(f"rmd daemon: {exc}", file=sys.stderr)
        return 2
    except ConfigMapPublishError as exc:
        print(f"rmd daemon: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"rmd daemon: cannot listen on {config.settings.rest_address}:"
            f"{config.settings.rest_port} ({exc.strerror}); change rmd.rest.port or "
            "rmd.rest.address",
            file=sys.stderr,
        )
        return 1
    return 0


async def _main(config: DaemonConfig, *, kubeconfig: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve(config, stop=stop, kubeconfig=kubeconfig)
