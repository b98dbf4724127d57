"""The node emulator's single pod watch across all namespaces.

LIST (paged) → ``on_snapshot(pods)`` → WATCH from the list's resourceVersion with bookmarks,
a server-side timeout and a client read timeout; a stream that ends normally is watched
again from the last resourceVersion seen; 410 Gone → LIST again; any other error → LIST
again after a capped, jittered backoff. Only cancellation ends :meth:`PodFeed.run`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import structlog

from rmd.kube.retry import api_error_message, backoff_delay, status_of
from rmd_dev.emulator.api import EmulatorApi

log = structlog.get_logger(__name__)
Pod = dict[str, Any]
MIN_STREAM_SECONDS = 1.0


class PodFeed:
    def __init__(
        self,
        api: EmulatorApi,
        *,
        on_snapshot: Callable[[list[Pod]], None],
        on_event: Callable[[str, Pod], None],
        backoff_base: float = 0.5,
        backoff_max: float = 15.0,
        rng: random.Random | None = None,
    ) -> None:
        self._api = api
        self._on_snapshot = on_snapshot
        self._on_event = on_event
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self.synced = asyncio.Event()  # set after the first successful LIST

    def _backoff(self, failures: int) -> float:
        return backoff_delay(
            failures,
            base_delay=self._backoff_base,
            max_delay=self._backoff_max,
            rng=self._rng,
            min_fraction=0.5,
        )

    async def run(self) -> None:
        failures = 0
        while True:
            verb = "list"
            try:
                pods, resource_version = await self._api.list_pods()
                self._on_snapshot(pods)
                self.synced.set()
                verb = "watch"
                loop = asyncio.get_running_loop()
                while True:
                    opened = loop.time()
                    stream = self._api.watch_pods(resource_version=resource_version)
                    async for kind, pod, seen_version in stream:
                        resource_version = seen_version
                        failures = 0
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self._on_event(kind, pod)
                    if loop.time() - opened < MIN_STREAM_SECONDS:
                        # Ended at once, normally: do not turn into a busy loop.
                        failures += 1
                        await asyncio.sleep(self._backoff(failures))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                status = status_of(error)
                if status == 410:
                    log.info("emulator_watch_gone", verb=verb, message=api_error_message(error))
                    failures += 1
                    if failures == 1:
                        continue  # list again at once
                else:
                    failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "emulator_watch_failed",
                    verb=verb,
                    status=status,
                    error=api_error_message(error),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
