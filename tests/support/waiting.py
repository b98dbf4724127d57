"""Waiting on a condition with a deadline (never a fixed sleep): the tests' one way to wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool]],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.1,
) -> None:
    """Await ``check()`` every ``interval`` seconds until it is true; fail naming ``what``
    after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(interval)


async def eventually_true(
    condition: Callable[[], bool],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.02,
) -> None:
    """:func:`eventually` for a condition that is checked without awaiting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(interval)
