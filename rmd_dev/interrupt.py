"""Run a coroutine so that SIGTERM (like Ctrl-C) cancels it and its clean-up still runs.

The demo and the benchmark start a whole control plane; killed by ``timeout`` or a CI
runner with SIGTERM, Python would otherwise die at once and leave it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


def run_cancellable(main: Coroutine[Any, Any, T]) -> T | None:
    """``asyncio.run(main)``, but SIGTERM cancels ``main`` (its ``finally`` blocks run);
    returns None when it was cancelled that way."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        return None
