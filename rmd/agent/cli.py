"""``rmd taskmanager [--grace-period SECONDS] [--] [command args ...]``: the agent as a process.

The TaskManager image's entrypoint. Reads the environment (see :mod:`rmd.agent.settings`),
logs structlog JSON to stderr, turns SIGTERM and SIGINT into a graceful stop, and exits with
the agent's exit code (:mod:`rmd.agent.exit_codes`).

The TaskManager's start is what a job waits for, so the command starts first: once the
environment has been checked, before the agent's HTTP client and logging are loaded (a few
hundred milliseconds of imports on a busy node), and those imports run on a thread of their
own at a lower CPU priority (:data:`LOADING_NICENESS`; Linux's nice value is per thread), so
the TaskManager's JVM, starting at the same moment, goes first on a node short of CPU. The
agent's own thread and the command keep their priority. The agent then supervises it as usual.

When the daemon published a launch plan next to ``config.yaml`` (:mod:`rmd.flink.launch_plan`)
and this pod matches it, the command is the TaskManager's JVM itself, started through the
image's entrypoint, instead of Flink's ``kubernetes-taskmanager.sh`` (no helper JVMs).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmd import eventloop
from rmd.agent.child import SupervisedProcess
from rmd.agent.exit_codes import EXIT_OK, EXIT_USAGE
from rmd.agent.flink_conf import flink_rest_url
from rmd.agent.settings import AgentEnvironmentError, AgentSettings, settings_from_env
from rmd.config import agent_env
from rmd.flink.launch_plan import (
    PLAN_FILE,
    Launch,
    LaunchPlan,
    PlanError,
    apply_plan,
    record_pid,
)

USAGE = "usage: rmd taskmanager [--grace-period SECONDS] [--] [command [args ...]]"
_GRACE_OPTION = "--grace-period"
LOADING_NICENESS = 10  # added to the loading thread's nice value (19 at most)
# What the agent loads once the command runs: its HTTP client and logging.
AGENT_MODULES = ("structlog", "rmd.agent.runner", "rmd.logs")


class UsageError(ValueError):
    """The command line cannot be understood."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskManagerArgs:
    command: tuple[str, ...] = ()  # empty: no supervised command, the agent runs alone
    grace_period: float | None = None  # None: AgentTiming's default
    show_help: bool = False


def parse_taskmanager_args(argv: Sequence[str]) -> TaskManagerArgs:
    """Options come first; ``--`` or the first non-option word starts the command."""
    grace_period: float | None = None
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            return TaskManagerArgs(command=tuple(argv[index + 1 :]), grace_period=grace_period)
        if word in ("-h", "--help"):
            return TaskManagerArgs(show_help=True)
        if word == _GRACE_OPTION or word.startswith(_GRACE_OPTION + "="):
            if "=" in word:
                value = word.partition("=")[2]
            elif index + 1 < len(argv):
                index += 1
                value = argv[index]
            else:
                raise UsageError(f"{_GRACE_OPTION} needs a number of seconds")
            grace_period = _grace_seconds(value)
        elif word.startswith("-"):
            raise UsageError(f"unknown option {word!r}; put '--' before the command")
        else:
            return TaskManagerArgs(command=tuple(argv[index:]), grace_period=grace_period)
        index += 1
    return TaskManagerArgs(grace_period=grace_period)


def run_taskmanager(argv: Sequence[str]) -> int:
    """Run the agent in this process until it ends; its exit code."""
    try:
        args = parse_taskmanager_args(argv)
    except UsageError as error:
        print(f"rmd taskmanager: {error}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    if args.show_help:
        print(USAGE)
        return EXIT_OK
    env = dict(os.environ)
    try:
        settings = settings_from_env(env)
    except AgentEnvironmentError as error:
        print(f"rmd taskmanager: {error}", file=sys.stderr)
        return EXIT_USAGE
    command: Sequence[str] = args.command
    planned = PlannedLaunch(launch=None, unused_because=None)
    if settings.supervise_flink:
        planned = planned_launch(command, env=env)
        if planned.launch is not None:
            command, env = planned.launch.command, planned.launch.env
    return eventloop.run(
        _run_until_signalled(
            settings,
            env=env,
            command=command,
            grace_period=args.grace_period,
            planned=planned,
        )
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedLaunch:
    """The daemon's launch plan applied to this pod (:mod:`rmd.flink.launch_plan`)."""

    launch: Launch | None  # None: the command runs as given
    unused_because: str | None  # why a published plan does not fit; None: no plan, or used


def planned_launch(command: Sequence[str], *, env: Mapping[str, str]) -> PlannedLaunch:
    """The plan in ``$FLINK_CONF_DIR`` applied to ``command`` and ``env`` when it fits."""
    conf_dir = env.get(agent_env.FLINK_CONF_DIR, "").strip()
    if not command or not conf_dir:
        return PlannedLaunch(launch=None, unused_because=None)
    try:
        plan = LaunchPlan.from_json((Path(conf_dir) / PLAN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return PlannedLaunch(launch=None, unused_because=None)  # the daemon made none
    except (OSError, UnicodeDecodeError, PlanError) as error:
        return PlannedLaunch(launch=None, unused_because=f"{PLAN_FILE}: {error}")
    result = apply_plan(plan, command=command, env=env, hostname=socket.gethostname())
    if isinstance(result, str):
        return PlannedLaunch(launch=None, unused_because=result)
    return PlannedLaunch(launch=result, unused_because=None)


async def _start_early(
    settings: AgentSettings, *, env: Mapping[str, str], command: Sequence[str]
) -> SupervisedProcess | None:
    """The command, started now when the environment is usable; None otherwise (no command,
    an environment the agent will refuse, or a command that cannot run: the agent then
    reports it as it would have)."""
    if not command:
        return None
    try:
        if settings.supervise_flink:
            flink_rest_url(env)
        return await SupervisedProcess.start(command, env=env)
    except (AgentEnvironmentError, OSError):
        return None


async def _run_until_signalled(
    settings: AgentSettings,
    *,
    env: Mapping[str, str],
    command: Sequence[str],
    grace_period: float | None,
    planned: PlannedLaunch,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        started = await _start_early(settings, env=env, command=command)
        if started is not None and planned.launch is not None:
            record_pid(planned.launch.pid_file, started.pid)  # as flink-console.sh does
        # Only now the agent itself (its HTTP client, logging): the command already runs.
        await load_agent_modules(niceness=LOADING_NICENESS if started is not None else 0)
        import structlog

        from rmd.agent.runner import AgentTiming, run_agent
        from rmd.logs import configure_logging

        if not structlog.is_configured():  # run in-process by a host that set up logging
            configure_logging(level="info")
        _log_plan(planned, structlog.get_logger("rmd.agent"))
        timing = AgentTiming() if grace_period is None else AgentTiming(grace_period=grace_period)
        return await run_agent(
            settings=settings,
            env=env,
            command=command,
            stop=stop,
            timing=timing,
            started=started,
        )
    finally:
        # On its way out with its exit code: a SIGTERM now (the pod being deleted after the
        # agent deregistered) must not end the process as "killed by SIGTERM" (143), hiding
        # the code — e.g. 137 when Flink's TaskManager was killed.
        for signum in signals:
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)


def _log_plan(planned: PlannedLaunch, log: Any) -> None:
    if planned.launch is not None:
        log.info("agent.launch_plan_used", log_number=planned.launch.log_id)
    elif planned.unused_because is not None:
        log.warning(
            "agent.launch_plan_unused",
            reason=planned.unused_because,
            consequence="Flink's scripts start the TaskManager (their helper JVMs included)",
        )


async def load_agent_modules(*, niceness: int) -> int:
    """Import :data:`AGENT_MODULES` on a thread of its own whose nice value is raised by
    ``niceness`` (nothing else changes priority); the nice value they were loaded at."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmd-agent-load") as loader:
        return await asyncio.get_running_loop().run_in_executor(loader, _load_yielding, niceness)


def _load_yielding(niceness: int) -> int:
    thread = threading.get_native_id()
    if niceness:
        # Linux: PRIO_PROCESS with a thread id sets that thread's nice value only; where
        # that fails, the modules load at the same priority.
        with contextlib.suppress(OSError):
            os.setpriority(
                os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + niceness
            )
    for module in AGENT_MODULES:
        importlib.import_module(module)
    return os.getpriority(os.PRIO_PROCESS, thread)


def _grace_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{_GRACE_OPTION} {text!r} is not a number of seconds ≥ 0")
    return value
