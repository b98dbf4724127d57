"""An in-memory Engine for API tests: the REAL allocator, a fake of the Kubernetes edge only.

Effects are recorded instead of carried out; tests move pods along with
:meth:`InMemoryEngine.start_requested_pods` (what the pod adapter and the watch would report)
and register TaskManagers through the HTTP API or directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from rmd.api.access_log import StructlogAccessLogger
from rmd.api.app import BODY_TIMEOUT_SECONDS, create_app
from rmd.api.server import IDLE_TIMEOUT, ApiRunner
from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import ManualClock
from rmd.core.model import Action, CreatePod, DeletePod
from rmd.job_waiters import JobWaiters
from rmd.metrics import RmdMetrics


class InMemoryEngine:
    def __init__(
        self,
        allocator: Allocator,
        *,
        metrics: RmdMetrics | None = None,
        ready: bool = True,
    ) -> None:
        self._allocator = allocator
        self._metrics = metrics
        self._job_waiters = JobWaiters(allocator.job_version)
        self._started: set[str] = set()
        self.applied: list[Action] = []
        self.ready = ready
        self.adopted = ready  # the first pod list adopted; stays so when the watch drops

    @property
    def allocator(self) -> Allocator:
        return self._allocator

    def apply(self, actions: Sequence[Action]) -> None:
        self.applied.extend(actions)
        for action in actions:
            if self._metrics is not None and not isinstance(action, CreatePod | DeletePod):
                self._metrics.observe(action)
        self._job_waiters.changed()

    async def wait_for_job(
        self, job_id: str, predicate: Callable[[], bool], *, timeout: float
    ) -> bool:
        return await self._job_waiters.wait(job_id, predicate, timeout=timeout)

    # ------------------------------------------------------------------ the fake edge

    def created_pods(self) -> list[str]:
        return [action.name for action in self.applied if isinstance(action, CreatePod)]

    def deleted_pods(self) -> list[str]:
        return [action.name for action in self.applied if isinstance(action, DeletePod)]

    def start_requested_pods(self) -> list[str]:
        """Report every pod created so far as created (requested → pending); their names."""
        names = [name for name in self.created_pods() if name not in self._started]
        for name in names:
            self._started.add(name)
            self.apply(self._allocator.create_succeeded(name))
        return names

    def register(self, name: str, *, address: str = "10.0.0.7:6122", slots: int) -> None:
        self.apply(self._allocator.register(name, address=address, slots=slots))


def make_engine(
    *,
    slots_per_taskmanager: int = 2,
    max_slots: int | None = None,
    clock: ManualClock | None = None,
    metrics: RmdMetrics | None = None,
) -> InMemoryEngine:
    settings = AllocatorSettings(
        cluster_id="flink-1", slots_per_taskmanager=slots_per_taskmanager, max_slots=max_slots
    )
    allocator = Allocator(settings, clock=clock or ManualClock(), attempt=1)
    return InMemoryEngine(allocator, metrics=metrics)


def make_metrics(engine: InMemoryEngine) -> RmdMetrics:
    return RmdMetrics(registry=CollectorRegistry(), status=engine.allocator.status)


def make_app(
    engine: InMemoryEngine,
    *,
    auth_token: str | None = None,
    max_wait: float = 300.0,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> web.Application:
    return create_app(
        engine=engine,
        metrics=make_metrics(engine),
        auth_token=auth_token,
        max_wait=max_wait,
        body_timeout=body_timeout,
    )


@contextlib.asynccontextmanager
async def served_api(
    app: web.Application, *, idle_timeout: float = IDLE_TIMEOUT
) -> AsyncIterator[tuple[int, ApiRunner]]:
    """``app`` served on a free loopback port as the daemon serves it (its runner, its
    connection handler): yields the port and the runner."""
    runner = ApiRunner(
        app,
        access_log_class=StructlogAccessLogger,
        shutdown_timeout=1.0,
        idle_timeout=idle_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1], runner
    finally:
        await runner.cleanup()
