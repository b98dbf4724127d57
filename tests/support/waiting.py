"""Waiting on a condition with a deadline (never a fixed sleep): the tests' one way to wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


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


async def within(awaitable: Awaitable[T], *, seconds: float, what: str) -> T:
    """Await ``awaitable`` for at most ``seconds``; fail naming ``what`` when it takes longer.

    Uses ``asyncio.timeout`` rather than ``asyncio.wait_for``, which on Python 3.11 can
    swallow a cancellation that arrives just as the awaited thing finishes."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds}s waiting for: {what}") from None


def until(condition: Callable[[], bool], *, what: str, timeout: float = 10.0) -> None:
    """:func:`eventually_true` for synchronous tests (blocks the thread between checks)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.02)
