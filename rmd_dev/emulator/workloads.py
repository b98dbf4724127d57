"""In-process workloads for pods annotated ``emulator.rmd.dev/run: "coroutine"``.

A workload plays a pod's first container inside the emulator's own event loop, so a benchmark
can run hundreds of "TaskManagers" without hundreds of Python processes. It gets the same
environment a process would get, the container's expanded command + args, and an event that
is set when the pod is deleted; its return value is the container's exit code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol


class Workload(Protocol):
    def __call__(
        self, *, env: Mapping[str, str], command: Sequence[str], stop: asyncio.Event
    ) -> Awaitable[int]: ...


async def sleep_workload(
    *, env: Mapping[str, str], command: Sequence[str], stop: asyncio.Event
) -> int:
    """Does nothing until the pod is deleted, then exits 0."""
    await stop.wait()
    return 0


async def rmd_agent_workload(
    *, env: Mapping[str, str], command: Sequence[str], stop: asyncio.Event
) -> int:
    """The TaskManager agent (``rmd taskmanager``) without a real TaskManager process.

    ``rmd.agent`` is imported on first use, so the emulator starts without loading it.
    """
    from rmd.agent import run_agent

    return await run_agent(env=env, command=None, stop=stop)


WORKLOADS: dict[str, Workload] = {
    "sleep": sleep_workload,
    "rmd-agent": rmd_agent_workload,
}
