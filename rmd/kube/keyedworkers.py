"""At most one background task per key: the label writer's, one per pod."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedWorkers(Generic[K]):
    """A worker takes the latest work for its key until none is left, then ends and removes
    itself — with no ``await`` between its last look and the removal, so work that arrives
    after it starts a new worker (:meth:`start`) and is never left behind."""

    def __init__(self, *, name: str) -> None:
        self._name = name
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._closing = False

    def running(self, key: K) -> bool:
        return key in self._tasks

    def task(self, key: K) -> asyncio.Task[None] | None:
        return self._tasks.get(key)

    def start(self, key: K, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` for ``key`` unless a worker for it runs already (or closing)."""
        if self._closing or key in self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks[key] = loop.create_task(self._run(key, work), name=f"{self._name} {key}")

    def cancel(self, key: K) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, key: K, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await work()
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
