"""Container runners: real local processes, in-process workloads, and pause containers."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from rmd.core.clock import SystemClock
from rmd_dev.emulator.runner import (
    CannotRun,
    CoroutineRunner,
    PauseRunner,
    ProcessRunner,
    exit_code_of,
)
from rmd_dev.emulator.workloads import WORKLOADS
from tests.support.waiting import eventually_true

ENV = {"PATH": os.environ["PATH"], "ONLY_THIS": "yes"}


def process(tmp_path: Path, *argv: str) -> ProcessRunner:
    return ProcessRunner(
        argv=list(argv), env=ENV, cwd=tmp_path, log_path=tmp_path / "main.log", clock=SystemClock()
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_process_exit_code_log_cwd_and_exact_env(tmp_path: Path) -> None:
    runner = process(
        tmp_path, "sh", "-c", 'echo "out $ONLY_THIS"; echo err >&2; env > env.txt; exit 3'
    )
    await runner.start()
    assert await runner.wait() == 3
    assert runner.started_at is not None
    assert runner.finished_at is not None
    assert runner.finished_at >= runner.started_at
    assert (tmp_path / "main.log").read_text().splitlines() == ["out yes", "err"]
    names = {line.split("=", 1)[0] for line in (tmp_path / "env.txt").read_text().splitlines()}
    assert names <= {"PATH", "ONLY_THIS", "PWD", "SHLVL", "_"}  # sh adds PWD/SHLVL/_ itself
    assert "HOME" not in names


async def test_stop_sends_sigterm_to_the_group_first(tmp_path: Path) -> None:
    runner = process(
        tmp_path, "sh", "-c", 'trap "echo bye; exit 0" TERM; echo up; while :; do sleep 0.05; done'
    )
    await runner.start()
    await eventually_true(
        lambda: "up" in (tmp_path / "main.log").read_text(), what="up in main.log", timeout=10
    )
    assert await runner.stop(grace_seconds=10) == 0
    assert "bye" in (tmp_path / "main.log").read_text()


async def test_stop_kills_after_the_grace_period(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('up', flush=True); time.sleep(60)"
    )
    runner = process(tmp_path, sys.executable, "-c", code)
    await runner.start()
    await eventually_true(
        lambda: "up" in (tmp_path / "main.log").read_text(), what="up in main.log", timeout=10
    )
    began = time.monotonic()
    assert await runner.stop(grace_seconds=0.5) == 137
    elapsed = time.monotonic() - began
    assert 0.4 <= elapsed < 5


async def test_whatever_the_main_process_leaves_behind_is_killed(tmp_path: Path) -> None:
    runner = process(tmp_path, "sh", "-c", "sleep 60 & echo $! > child.pid")
    await runner.start()
    assert await runner.wait() == 0
    child = int((tmp_path / "child.pid").read_text())
    await eventually_true(lambda: not pid_alive(child), what="the child gone", timeout=10)


async def test_kill_is_sigkill(tmp_path: Path) -> None:
    runner = process(tmp_path, "sleep", "60")
    await runner.start()
    assert await runner.kill() == 137


async def test_commands_that_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(CannotRun) as missing:
        await process(tmp_path, "no-such-command-xyz").start()
    assert missing.value.exit_code == 127
    assert (
        'exec: "no-such-command-xyz": executable file not found in $PATH' in missing.value.message
    )
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(CannotRun) as not_executable:
        await process(tmp_path, "./script.sh").start()
    assert not_executable.value.exit_code == 126
    with pytest.raises(CannotRun):
        await process(tmp_path).start()


def test_signal_exit_codes() -> None:
    assert exit_code_of(0) == 0
    assert exit_code_of(3) == 3
    assert exit_code_of(-9) == 137
    assert exit_code_of(-15) == 143


def coroutine(tmp_path: Path, name: str, workload: object | None = None) -> CoroutineRunner:
    return CoroutineRunner(
        name=name,
        workload=WORKLOADS.get(name) if workload is None else workload,  # type: ignore[arg-type]
        env=ENV,
        command=["serve", "--fast"],
        log_path=tmp_path / "main.log",
        clock=SystemClock(),
        known=list(WORKLOADS),
    )


async def test_sleep_workload_runs_until_stopped(tmp_path: Path) -> None:
    runner = coroutine(tmp_path, "sleep")
    await runner.start()
    waiting = asyncio.ensure_future(runner.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert await runner.stop(grace_seconds=5) == 0
    assert await waiting == 0
    log = (tmp_path / "main.log").read_text()
    assert "workload sleep started" in log
    assert "workload sleep returned 0" in log


async def test_workload_gets_env_and_command_and_its_result_is_the_exit_code(
    tmp_path: Path,
) -> None:
    seen: dict[str, object] = {}

    async def record(*, env: Mapping[str, str], command: Sequence[str], stop: asyncio.Event) -> int:
        seen["env"], seen["command"] = dict(env), list(command)
        return 7

    runner = coroutine(tmp_path, "record", record)
    await runner.start()
    assert await runner.wait() == 7
    assert seen == {"env": ENV, "command": ["serve", "--fast"]}


async def test_workload_exception_is_exit_1_with_traceback(tmp_path: Path) -> None:
    async def broken(*, env: Mapping[str, str], command: Sequence[str], stop: asyncio.Event) -> int:
        raise RuntimeError("boom")

    runner = coroutine(tmp_path, "broken", broken)
    await runner.start()
    assert await runner.wait() == 1
    log = (tmp_path / "main.log").read_text()
    assert "RuntimeError: boom" in log


async def test_workload_ignoring_stop_is_cancelled_after_grace(tmp_path: Path) -> None:
    async def stubborn(
        *, env: Mapping[str, str], command: Sequence[str], stop: asyncio.Event
    ) -> int:
        await asyncio.Event().wait()
        return 0

    runner = coroutine(tmp_path, "stubborn", stubborn)
    await runner.start()
    assert await runner.stop(grace_seconds=0.05) == 137


async def test_unknown_workload_cannot_run(tmp_path: Path) -> None:
    runner = CoroutineRunner(
        name="nope",
        workload=None,
        env=ENV,
        command=[],
        log_path=tmp_path / "main.log",
        clock=SystemClock(),
        known=["sleep"],
    )
    with pytest.raises(CannotRun, match=r'workload "nope" is not registered \(known: sleep\)'):
        await runner.start()


def test_rmd_agent_workload_is_registered() -> None:
    assert {"sleep", "rmd-agent"} <= set(WORKLOADS)


async def test_pause_runs_until_stopped_or_killed() -> None:
    pause = PauseRunner(clock=SystemClock())
    await pause.start()
    waiting = asyncio.ensure_future(pause.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert await pause.stop(grace_seconds=1) == 0
    assert await waiting == 0
    killed = PauseRunner(clock=SystemClock())
    await killed.start()
    assert await killed.kill() == 137
