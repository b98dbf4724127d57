"""``rmd session start|stop|list`` and ``rmd application start``: deploy, remove and show
Flink session and application clusters.

An application cluster is a session cluster whose JobManager runs the job's jar
(:class:`~rmd.session.manifests.ApplicationProgram`); it removes itself when the application
has ended (the daemon in it deletes the Deployment), and ``rmd session stop`` removes it too.

Exit codes: 0 done, 1 the cluster side failed (message says what to do), 2 bad arguments or
configuration (nothing was touched).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from kubernetes_asyncio import client

from rmd.cli_options import add_configuration_arguments
from rmd.config import options as opt
from rmd.config.files import configuration_directory
from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.jobmanager_options import JobManagerPodOptions
from rmd.config.settings import RmdSettings
from rmd.kube.client import KubeConfigError, load_kube_configuration
from rmd.kube.flinkconfigmap import read_log_config_files
from rmd.kube.podspec import TaskManagerPodFactory
from rmd.kube.podtemplate import empty_pod_template, load_pod_template
from rmd.session.access import (
    LIST_PERMISSIONS,
    START_PERMISSIONS,
    STOP_PERMISSIONS,
    Permission,
    denial_message,
    first_denied,
)
from rmd.session.application import ApplicationError, application_program
from rmd.session.deploy import (
    API_ERRORS,
    SessionError,
    list_clusters,
    rest_endpoint_lines,
    start_cluster,
    stay_attached,
    stop_cluster,
    unreachable,
)
from rmd.session.manifests import ApplicationProgram, SessionPlan, session_plan

PROG = "rmd session"
APPLICATION_PROG = "rmd application"
DEFAULT_START_TIMEOUT = 300.0
DEFAULT_STOP_TIMEOUT = 300.0
GENERATED_ID_PREFIX = "flink-session-"
GENERATED_APPLICATION_ID_PREFIX = "flink-application-"


def run_session(argv: Sequence[str]) -> int:
    args = _parse(_parser(), argv)
    if isinstance(args, int):
        return args
    prog = f"{PROG} {args.action}"
    try:
        if args.action == "start":
            plan = start_plan(args.conf_dir, args.overrides)
            return asyncio.run(_start(args, plan, prog=prog))
        conf = FlinkConfiguration.load(conf_dir=args.conf_dir, overrides=args.overrides)
        namespace = conf.get(opt.NAMESPACE)
        if args.action == "stop":
            cluster_id = RmdSettings.from_configuration(conf).cluster_id
            return asyncio.run(_stop(args, cluster_id=cluster_id, namespace=namespace))
        return asyncio.run(_list(args, namespace=namespace))
    except ConfigError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except (SessionError, KubeConfigError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1


def run_application(argv: Sequence[str]) -> int:
    args = _parse(_application_parser(), argv)
    if isinstance(args, int):
        return args
    prog = f"{APPLICATION_PROG} {args.action}"
    try:
        program, note = application_program(
            args.jar, main_class=args.main_class, arguments=args.arguments
        )
        plan = start_plan(args.conf_dir, args.overrides, application=program)
    except (ApplicationError, ConfigError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    if note is not None:
        _say(note)
    try:
        return asyncio.run(_start(args, plan, prog=prog))
    except (SessionError, KubeConfigError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    """The arguments, or the exit code when there is nothing to act on (argparse has said
    why, or printed the help)."""
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else 2
    if args.action is None:
        parser.print_usage(sys.stderr)
        return 2
    return args


def _say(line: str) -> None:
    print(line, flush=True)


def start_plan(
    conf_dir: Path | None,
    overrides: Sequence[str],
    *,
    application: ApplicationProgram | None = None,
) -> SessionPlan:
    """Read and check the whole configuration (ConfigError); no cluster-id: one is made up."""
    conf = FlinkConfiguration.load(conf_dir=conf_dir, overrides=overrides)
    if not conf.get_str(opt.CLUSTER_ID.key):
        prefix = GENERATED_ID_PREFIX if application is None else GENERATED_APPLICATION_ID_PREFIX
        generated = prefix + secrets.token_hex(4)
        conf = conf.with_overrides({opt.CLUSTER_ID.key: generated})
        _say(f"no {opt.CLUSTER_ID.key} given: using {generated}")
    settings = RmdSettings.from_configuration(conf)
    taskmanager_pods = TaskManagerPodFactory.from_configuration(conf, settings)
    jobmanager = JobManagerPodOptions.from_configuration(conf)
    if jobmanager.pod_template is None:
        template = empty_pod_template()
    else:
        key, path = jobmanager.pod_template
        template = load_pod_template(path, key=key)
    log_files = read_log_config_files(configuration_directory(conf_dir))
    plan = session_plan(
        conf,
        settings,
        taskmanager=taskmanager_pods.options,
        jobmanager=jobmanager,
        template=template,
        log_files=log_files,
        taskmanager_pod_template=taskmanager_pods.pod_template_text,
        application=application,
    )
    return plan


async def _api(kubeconfig: Path | None) -> client.ApiClient:
    configuration = await load_kube_configuration(kubeconfig=kubeconfig)
    return client.ApiClient(configuration)


async def _check(
    api: client.ApiClient, permissions: tuple[Permission, ...], *, namespace: str, timeout: float
) -> None:
    denied = await first_denied(api, permissions, namespace=namespace, timeout=timeout)
    if denied is not None:
        raise SessionError(denial_message(denied, namespace=namespace))


async def _start(args: argparse.Namespace, plan: SessionPlan, *, prog: str) -> int:
    api = await _api(args.kubeconfig)
    host = str(api.configuration.host)
    try:
        await _check(api, START_PERMISSIONS, namespace=plan.namespace, timeout=args.request_timeout)
        started = await start_cluster(
            api, plan, say=_say, timeout=args.timeout, request_timeout=args.request_timeout
        )
        _say(
            f"{plan.kind} cluster {plan.cluster_id} is up in namespace {plan.namespace} "
            f"after {started.elapsed:.1f} s"
        )
        for line in await rest_endpoint_lines(
            api, plan, started, request_timeout=args.request_timeout
        ):
            _say(line)
        if plan.application is not None:
            _say(_application_end_line(plan))
        if not args.attach:
            _say(
                f"stop it with: rmd session stop -D {opt.CLUSTER_ID.key}={plan.cluster_id} "
                f"-D {opt.NAMESPACE.key}={plan.namespace}"
            )
            return 0
        detach = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, detach.set)
        _say("attached: Ctrl-C stops the cluster")
        if await stay_attached(
            api, plan, detach=detach, say=_say, request_timeout=args.request_timeout
        ):
            elapsed = await stop_cluster(
                api,
                cluster_id=plan.cluster_id,
                namespace=plan.namespace,
                propagation="Foreground",
                say=_say,
                timeout=DEFAULT_STOP_TIMEOUT,
                request_timeout=args.request_timeout,
            )
            _say(f"{plan.kind} cluster {plan.cluster_id} removed after {elapsed:.1f} s")
    except API_ERRORS as error:
        raise unreachable(error, host=host) from None
    finally:
        await api.close()
    return 0


def _application_end_line(plan: SessionPlan) -> str:
    key = opt.SHUTDOWN_ON_APPLICATION_FINISH.key
    if plan.shutdown_on_application_finish:
        return (
            "the application runs in the JobManager; the cluster removes itself when it has "
            f"ended (FINISHED, FAILED, CANCELED; {key}: false keeps it)"
        )
    return f"the application runs in the JobManager; the cluster stays after it ({key}: false)"


async def _stop(args: argparse.Namespace, *, cluster_id: str, namespace: str) -> int:
    api = await _api(args.kubeconfig)
    host = str(api.configuration.host)
    try:
        await _check(api, STOP_PERMISSIONS, namespace=namespace, timeout=args.request_timeout)
        elapsed = await stop_cluster(
            api,
            cluster_id=cluster_id,
            namespace=namespace,
            propagation=args.propagation,
            say=_say,
            timeout=args.timeout,
            request_timeout=args.request_timeout,
        )
        _say(f"session cluster {cluster_id} removed after {elapsed:.1f} s")
    except API_ERRORS as error:
        raise unreachable(error, host=host) from None
    finally:
        await api.close()
    return 0


async def _list(args: argparse.Namespace, *, namespace: str) -> int:
    api = await _api(args.kubeconfig)
    host = str(api.configuration.host)
    try:
        await _check(api, LIST_PERMISSIONS, namespace=namespace, timeout=args.request_timeout)
        rows = await list_clusters(api, namespace=namespace, request_timeout=args.request_timeout)
    except API_ERRORS as error:
        raise unreachable(error, host=host) from None
    finally:
        await api.close()
    if not rows:
        _say(f"no rmd clusters in namespace {namespace}")
        return 0
    table = [["CLUSTER-ID", "AGE", "JOBMANAGER", "TASKMANAGERS", "SLOTS"]] + [
        [row.cluster_id, row.age, row.jobmanager_ready, str(row.taskmanagers), str(row.slots)]
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
    for line in table:
        _say(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Deploy, remove and show Flink session clusters run by rmd."
    )
    actions = parser.add_subparsers(dest="action")
    start = actions.add_parser(
        "start",
        help="create a session cluster and wait for its JobManager",
        description=(
            "Create the ConfigMap, the JobManager Deployment and its Services "
            "(<cluster-id>, <cluster-id>-rest), wait for the JobManager, print the REST endpoint."
        ),
    )
    stop = actions.add_parser(
        "stop",
        help="delete a session or application cluster and wait until its pods are gone",
    )
    listing = actions.add_parser("list", help="the rmd clusters of a namespace")
    for sub in (start, stop, listing):
        _add_cluster_arguments(sub)
    _add_start_arguments(start)
    stop.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT,
        help=f"seconds to wait until the pods are gone (default {DEFAULT_STOP_TIMEOUT:g})",
    )
    stop.add_argument(
        "--propagation",
        choices=("Foreground", "Background"),
        default="Foreground",
        help="how the deletion reaches owned objects (default Foreground)",
    )
    return parser


def _application_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=APPLICATION_PROG,
        description="Deploy Flink application clusters run by rmd (application mode: the "
        "job's jar runs in the JobManager). Remove one early with rmd session stop.",
    )
    actions = parser.add_subparsers(dest="action")
    start = actions.add_parser(
        "start",
        help="create an application cluster and wait for its JobManager",
        description=(
            "Create the ConfigMap, the JobManager Deployment (running the jar) and its "
            "Services, wait for the JobManager, print the REST endpoint. When the "
            "application has ended (FINISHED, FAILED, CANCELED) the cluster removes itself, "
            "unless execution.shutdown-on-application-finish is false."
        ),
    )
    _add_cluster_arguments(start)
    _add_start_arguments(start)
    start.add_argument(
        "--jar",
        required=True,
        metavar="PATH",
        help="the job's jar. The image needs a local:// URI of a jar in the image "
        "(local:///opt/flink/usrlib/job.jar); a plain path becomes local://<absolute path>, "
        "which only works where pods see this machine's files (rmd dev-cluster)",
    )
    start.add_argument(
        "--class",
        dest="main_class",
        metavar="NAME",
        default=None,
        help="the class whose main() runs (default: the jar manifest's Main-Class)",
    )
    start.add_argument(
        "arguments",
        nargs="*",
        metavar="ARG",
        help="the program's arguments; put -- before them",
    )
    return parser


def _add_cluster_arguments(sub: argparse.ArgumentParser) -> None:
    add_configuration_arguments(sub)
    sub.add_argument(
        "--kubeconfig", type=Path, default=None, help="kubeconfig file (default: as kubectl)"
    )
    sub.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds for one API request (default 30)",
    )


def _add_start_arguments(start: argparse.ArgumentParser) -> None:
    start.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT,
        help=f"seconds to wait for the JobManager (default {DEFAULT_START_TIMEOUT:g})",
    )
    start.add_argument(
        "--attach",
        action="store_true",
        help="stay attached, show the JobManager's readiness, stop the cluster on Ctrl-C",
    )
