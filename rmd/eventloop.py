"""The event loop rmd's processes run on: uvloop's when it can be imported, else asyncio's.

uvloop implements asyncio's event loop on libuv (the same API: tasks, signals, subprocesses,
TLS). Measured on the daemon's HTTP app (``python -m bench.heartbeats``, docs/PERFORMANCE.md):
heartbeats at 2,000/s answered with a p99 of 17.6 / 14.9 ms instead of 34.4 / 20.8 ms (two
runs) and 10 to 15 % less CPU per request; aiohttp, the Kubernetes client and the pod watch
run on it unchanged. It is a dependency of the package (the Docker image has it); where it
cannot be imported (a platform without a wheel, an environment installed without it) the
process runs on asyncio's own loop, which is slower, not different: nothing in rmd depends
on which loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory() -> LoopFactory | None:
    """uvloop's ``new_event_loop`` when uvloop imports, else None (asyncio's default)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """What :func:`run` runs on, for the start-up log: ``uvloop`` or ``asyncio``."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop's loop when it imports."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
