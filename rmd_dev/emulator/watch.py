"""The node emulator's single pod watch across all namespaces: the reflector of
:mod:`rmd.kube.reflector` (LIST → ``on_snapshot`` → WATCH from its resourceVersion, renewed
from the last version seen; 410 → LIST again; errors → backoff) over every pod. Only
cancellation ends :meth:`PodFeed.run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rmd.kube.listwatch import ResourceQuery, whole_object
from rmd.kube.reflector import Reflector, ReflectorCallbacks, ReflectorTimings
from rmd.retry import Backoff, Pacing
from rmd_dev.emulator.api import EmulatorApi

Pod = dict[str, Any]


class PodFeed:
    def __init__(
        self,
        api: EmulatorApi,
        *,
        on_snapshot: Callable[[list[Pod]], None],
        on_event: Callable[[str, Pod], None],
        backoff: Backoff | None = None,
        pacing: Pacing | None = None,
    ) -> None:
        self.synced = asyncio.Event()  # set after the first successful LIST

        def snapshot(pods: list[Pod]) -> None:
            on_snapshot(pods)
            self.synced.set()

        timeouts = api.timeouts
        self._reflector: Reflector[Pod] = Reflector(
            api.client,
            ResourceQuery(resource="pods"),
            callbacks=ReflectorCallbacks(
                convert=whole_object, on_snapshot=snapshot, on_event=on_event
            ),
            timings=ReflectorTimings(
                server_timeout=timeouts.watch_server,
                read_timeout=timeouts.watch_read,
                connect_timeout=timeouts.request[0],
                list_timeout=timeouts.list_read,
                resync_interval=None,  # the emulator needs no safety-net relists
                backoff=backoff or Backoff(base=0.5, cap=15.0, min_fraction=0.5),
            ),
            pacing=pacing,
            name="emulator_watch",
        )

    async def run(self) -> None:
        await self._reflector.run()
