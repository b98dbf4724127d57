"""What plays one container: a local OS process, an in-process coroutine, or nothing at all.

Every runner has the same life: ``start()`` (raises :class:`CannotRun` when the container
cannot start, like the runtime's ``ContainerCannotRun``), ``wait()`` for its exit code,
``stop(grace_seconds=...)`` (SIGTERM, then SIGKILL after the grace period) and ``kill()``.

A process runs in its own session (so its process group can be signalled as a whole), with
the pod directory as its working directory and stdout+stderr appended to its log file. When
the main process ends, whatever it left in its process group is killed, as a container
runtime tears down the container. ``setpriv --pdeathsig KILL`` (util-linux) makes the process
die with the emulator even if the emulator is killed without a chance to stop it. A process
with volumes runs in its own mount namespace (``unshare --mount``, as root) where
:mod:`rmd_dev.emulator.mountns` bind-mounts them at their mount paths before it becomes the
container's command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from rmd.core.clock import Clock
from rmd_dev.emulator.mountns import MountError, in_mount_namespace
from rmd_dev.emulator.status import cannot_run_message
from rmd_dev.emulator.workloads import Workload

EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
EXIT_KILLED = 128 + signal.SIGKILL
EXIT_CANNOT_START = 128  # what runtimes report for a container they could not start


class CannotRun(Exception):
    """The container could not be started; it terminates at once with ``exit_code``."""

    def __init__(self, *, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


class ContainerRunner(Protocol):
    @property
    def started_at(self) -> float | None: ...

    @property
    def finished_at(self) -> float | None: ...

    async def start(self) -> None: ...

    async def wait(self) -> int: ...

    async def stop(self, *, grace_seconds: float) -> int: ...

    async def kill(self) -> int: ...


def exit_code_of(returncode: int) -> int:
    """A process' return code as a container's exit code (128 + signal when killed)."""
    return 128 - returncode if returncode < 0 else returncode


def resolve_executable(name: str, *, path: str | None, cwd: Path) -> str:
    """The file ``name`` runs (the container's ``$PATH`` lookup); raises :class:`CannotRun`."""
    if not name:
        raise CannotRun(exit_code=EXIT_NOT_FOUND, message=cannot_run_message(name, "no command"))
    if "/" in name:
        candidate = str(cwd / name) if not os.path.isabs(name) else name
        if not os.path.exists(candidate):
            raise CannotRun(
                exit_code=EXIT_NOT_FOUND,
                message=cannot_run_message(name, "stat " + name + ": no such file or directory"),
            )
        if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
            raise CannotRun(
                exit_code=EXIT_NOT_EXECUTABLE, message=cannot_run_message(name, "permission denied")
            )
        return candidate
    found = shutil.which(name, path=path or os.defpath)
    if found is None:
        raise CannotRun(
            exit_code=EXIT_NOT_FOUND,
            message=cannot_run_message(name, "executable file not found in $PATH"),
        )
    return found


class ProcessRunner:
    def __init__(
        self,
        *,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        clock: Clock,
        kill_with_parent: bool = True,
        mounts: Sequence[tuple[Path, str]] = (),
        scratch: Path | None = None,
    ) -> None:
        """``mounts``: (materialized directory, mount path) pairs the process must see,
        read-only; ``scratch``: where the mount namespace may keep its own files."""
        self._argv = list(argv)
        self._mounts = list(mounts)
        self._scratch = scratch or cwd / "mountns"
        self._env = dict(env)
        self._cwd = cwd
        self._log_path = log_path
        self._clock = clock
        self._kill_with_parent = kill_with_parent
        self._process: asyncio.subprocess.Process | None = None
        self._exit: asyncio.Task[int] | None = None
        self._started_at: float | None = None
        self._finished_at: float | None = None

    @property
    def started_at(self) -> float | None:
        return self._started_at

    @property
    def finished_at(self) -> float | None:
        return self._finished_at

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        if not self._argv:
            raise CannotRun(exit_code=EXIT_NOT_FOUND, message=cannot_run_message("", "no command"))
        executable = resolve_executable(self._argv[0], path=self._env.get("PATH"), cwd=self._cwd)
        argv = [executable, *self._argv[1:]]
        if self._mounts:
            argv = self._in_mount_namespace(argv)
        setpriv = shutil.which("setpriv") if self._kill_with_parent else None
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._log_path.open("ab") as log:
                self._process = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=self._cwd,
                    env=self._env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
        except (OSError, ValueError) as error:
            raise CannotRun(
                exit_code=EXIT_NOT_EXECUTABLE,
                message=cannot_run_message(self._argv[0], str(error)),
            ) from error
        self._started_at = self._clock.wall()
        self._exit = asyncio.create_task(self._reap(self._process))

    def _in_mount_namespace(self, argv: Sequence[str]) -> list[str]:
        try:
            command = in_mount_namespace(argv, binds=self._mounts, scratch=self._scratch)
        except MountError as error:
            raise CannotRun(
                exit_code=EXIT_CANNOT_START,
                message=cannot_run_message(
                    self._argv[0], f"volumes need a private mount namespace: {error}"
                ),
            ) from error
        self._scratch.mkdir(parents=True, exist_ok=True)
        return command

    async def _reap(self, process: asyncio.subprocess.Process) -> int:
        returncode = await process.wait()
        self._finished_at = self._clock.wall()
        self._signal_group(process.pid, signal.SIGKILL)  # what the main process left behind
        return exit_code_of(returncode)

    @staticmethod
    def _signal_group(pgid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)

    def _started(self) -> tuple[asyncio.subprocess.Process, asyncio.Task[int]]:
        if self._process is None or self._exit is None:
            raise RuntimeError("the process was not started")
        return self._process, self._exit

    async def wait(self) -> int:
        _, exit_task = self._started()
        return await asyncio.shield(exit_task)

    async def stop(self, *, grace_seconds: float) -> int:
        process, exit_task = self._started()
        if not exit_task.done():
            self._signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exit_task), timeout=max(grace_seconds, 0))
            except TimeoutError:
                self._signal_group(process.pid, signal.SIGKILL)
        return await asyncio.shield(exit_task)

    async def kill(self) -> int:
        process, exit_task = self._started()
        if not exit_task.done():
            self._signal_group(process.pid, signal.SIGKILL)
        return await asyncio.shield(exit_task)


class CoroutineRunner:
    """Runs a registered :class:`Workload`; its log file records start, end and tracebacks."""

    def __init__(
        self,
        *,
        name: str,
        workload: Workload | None,
        env: Mapping[str, str],
        command: Sequence[str],
        log_path: Path,
        clock: Clock,
        known: Sequence[str] = (),
    ) -> None:
        self._name = name
        self._workload = workload
        self._env = dict(env)
        self._command = list(command)
        self._log_path = log_path
        self._clock = clock
        self._known = list(known)
        self._stop = asyncio.Event()
        self._killed = False
        self._task: asyncio.Task[int] | None = None
        self._started_at: float | None = None
        self._finished_at: float | None = None

    @property
    def started_at(self) -> float | None:
        return self._started_at

    @property
    def finished_at(self) -> float | None:
        return self._finished_at

    def _log(self, line: str) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("a") as log:
            log.write(line.rstrip("\n") + "\n")

    async def start(self) -> None:
        if self._workload is None:
            known = ", ".join(sorted(self._known)) or "none"
            raise CannotRun(
                exit_code=EXIT_NOT_FOUND,
                message=f'workload "{self._name}" is not registered (known: {known})',
            )
        self._started_at = self._clock.wall()
        self._log(f"emulator: workload {self._name} started")
        self._task = asyncio.create_task(self._run(self._workload))

    async def _run(self, workload: Workload) -> int:
        try:
            exit_code = int(await workload(env=self._env, command=self._command, stop=self._stop))
        except asyncio.CancelledError:
            if not self._killed:
                raise
            exit_code = EXIT_KILLED
            self._log(f"emulator: workload {self._name} killed")
        except Exception:
            exit_code = 1
            self._log(f"emulator: workload {self._name} raised\n{traceback.format_exc()}")
        else:
            self._log(f"emulator: workload {self._name} returned {exit_code}")
        self._finished_at = self._clock.wall()
        return exit_code

    def _started(self) -> asyncio.Task[int]:
        if self._task is None:
            raise RuntimeError("the workload was not started")
        return self._task

    async def wait(self) -> int:
        return await asyncio.shield(self._started())

    async def stop(self, *, grace_seconds: float) -> int:
        task = self._started()
        self._stop.set()
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=max(grace_seconds, 0))
            except TimeoutError:
                return await self.kill()
        return await asyncio.shield(task)

    async def kill(self) -> int:
        task = self._started()
        if not task.done():
            self._killed = True
            task.cancel()
        return await asyncio.shield(task)


class PauseRunner:
    """A container without a process: runs until stopped, then exits 0 (like ``pause``)."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._stopped = asyncio.Event()
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._exit_code = 0

    @property
    def started_at(self) -> float | None:
        return self._started_at

    @property
    def finished_at(self) -> float | None:
        return self._finished_at

    async def start(self) -> None:
        self._started_at = self._clock.wall()

    async def wait(self) -> int:
        await self._stopped.wait()
        return self._exit_code

    def _end(self, exit_code: int) -> int:
        if not self._stopped.is_set():
            self._exit_code = exit_code
            self._finished_at = self._clock.wall()
            self._stopped.set()
        return self._exit_code

    async def stop(self, *, grace_seconds: float) -> int:
        return self._end(0)

    async def kill(self) -> int:
        return self._end(EXIT_KILLED)
