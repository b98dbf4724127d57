"""The supervised TaskManager process: start it, wait for it, stop it gracefully.

The child inherits the agent's stdout and stderr (the container's log) and gets the agent's
environment. Stopping it is what the kubelet does to a container: SIGTERM, then SIGKILL once a
grace period has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence


class SupervisedProcess:
    """One running child process. Create it with :meth:`start`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, command: Sequence[str], *, env: Mapping[str, str]) -> SupervisedProcess:
        """Start ``command``; raises OSError when it cannot be executed."""
        process = await asyncio.create_subprocess_exec(*command, env=dict(env))
        return cls(process)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """None while running; negative ``-N`` when signal N ended it (asyncio's convention)."""
        return self._process.returncode

    async def wait(self) -> int:
        return await self._process.wait()

    async def terminate(self, *, grace_period: float) -> int:
        """SIGTERM, wait up to ``grace_period`` seconds, then SIGKILL; the return code."""
        if self._process.returncode is not None:
            return self._process.returncode
        self._signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(self._process.wait()), grace_period)
        except TimeoutError:
            self.kill()
            return await self._process.wait()

    def kill(self) -> None:
        """SIGKILL at once, without waiting (for clean-up when there is no time left)."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                self._process.send_signal(signum)


def exit_code_of(returncode: int, *, stop_requested: bool) -> int:
    """The agent's exit code for a child that ended with ``returncode``.

    A child's own exit code passes through. A child ended by signal N gives 128 + N, as a
    shell reports it, except that a child which obeyed a requested stop (SIGTERM or SIGINT)
    counts as a clean exit: 0.
    """
    if returncode >= 0:
        return returncode
    signum = -returncode
    if stop_requested and signum in (signal.SIGTERM, signal.SIGINT):
        return 0
    return 128 + signum
