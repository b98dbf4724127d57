"""Writing Kubernetes Events (core/v1): what ``kubectl describe`` and ``kubectl get events`` show.

:meth:`EventRecorder.record` never waits: it asks the correlator
(:mod:`rmd.kube.eventcorrelation`) what to write and queues that (a small record, no task).
A pool of at most ``max_parallel`` workers takes the queue in order of arrival; per Event
series one write is in flight at a time (a newer count replaces a queued one), each with a
timeout. Each write also takes a turn in the pod gateway's limit toward the API server
(``rmd.kubernetes.max-parallel-requests``) at the lowest priority: an Event is sent only when
no pod create, delete or label patch waits, so Events never slow a scale-out.

A series is created once (``POST``) and then patched (count, lastTimestamp, message); a
patch that finds the Event gone (the API server keeps Events for an hour) creates it again.
A write that fails is not retried: the Event is dropped and counted
(``rmd_kubernetes_events_dropped_total``) — allocation never waits for Events, and while the
API server is unavailable they would only pile up.

core/v1, not events.k8s.io/v1: kubectl 1.20's ``describe`` and ``get events`` read core/v1
Events (``involvedObject``, ``source``, ``count``), so the RBAC rule is ``events`` in the core
group ("").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.core.clock import Clock
from rmd.kube.eventcorrelation import EventCorrelator, EventDraft, EventWrite
from rmd.kube.priorityslots import Priority, PrioritySlots
from rmd.kube.retry import api_error_message, short_reason, status_of

log = structlog.get_logger(__name__)

SOURCE_COMPONENT = "rmd"
REPORTING_CONTROLLER = "rmd.dev/daemon"
# series waiting for a write slot; more are dropped (counted). A queued write is a small
# record (no task): a scale-out of thousands of pods queues one Event each.
MAX_QUEUED = 8192
MAX_NAMES = 4096  # Event object names remembered for patches
# The patch methods take _content_type (their stubs do not say so).
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


class EventRecorder:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        correlator: EventCorrelator,
        clock: Clock,
        instance: str,
        request_timeout: float = 10.0,
        max_parallel: int = 2,
        max_queued: int = MAX_QUEUED,
        api_slots: PrioritySlots | None = None,
        on_written: Callable[[str], None] | None = None,
        on_dropped: Callable[[str], None] | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._correlator = correlator
        self._clock = clock
        self._instance = instance
        self._timeout = request_timeout
        self._max_parallel = max(1, max_parallel)
        self._api_slots = api_slots
        self._max_queued = max_queued
        self._on_written = on_written or (lambda _kind: None)
        self._on_dropped = on_dropped or (lambda _reason: None)
        self._queued: dict[int, EventWrite] = {}  # series -> its newest write, in arrival order
        self._in_flight: set[int] = set()  # series with a write being sent
        self._names: OrderedDict[int, str] = OrderedDict()
        self._pool: set[asyncio.Task[None]] = set()
        self._flush_wakeup = asyncio.Event()
        self._closing = False
        self._warned: set[str] = set()

    def record(self, draft: EventDraft) -> None:
        """One occurrence; written in the background (or counted into a later write)."""
        if self._closing:
            return
        write = self._correlator.observe(draft)
        if write is None:
            self._flush_wakeup.set()  # a count waits for a token: the flusher picks it up
            return
        self._submit(write)

    async def run_flusher(self) -> None:
        """Write the counts that waited for a token, once tokens are back."""
        while True:
            for write in self._correlator.flush():
                self._submit(write)
            self._flush_wakeup.clear()
            at = self._correlator.next_flush_at()
            delay = None if at is None else max(at - self._clock.monotonic(), 0.05)
            try:
                async with asyncio.timeout(delay):
                    await self._flush_wakeup.wait()
            except TimeoutError:
                pass

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._pool)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ internals
    def _submit(self, write: EventWrite) -> None:
        if self._closing:
            return
        if write.series not in self._queued and len(self._queued) >= self._max_queued:
            self._dropped(write, reason="queue-full", detail="too many Events waiting")
            return
        self._queued[write.series] = write  # a newer count replaces one not yet sent
        if len(self._pool) < self._max_parallel:
            task = asyncio.get_running_loop().create_task(self._worker(), name="event writer")
            self._pool.add(task)
            task.add_done_callback(self._pool.discard)

    def _next_series(self) -> int | None:
        """The oldest queued series with no write in flight (a series' writes stay in order)."""
        for series in self._queued:
            if series not in self._in_flight:
                return series
        return None

    async def _worker(self) -> None:
        # A worker ends when nothing is eligible, with no await between its last look and its
        # end: a write queued later finds the pool short of a worker and starts one.
        try:
            while (series := self._next_series()) is not None:
                self._in_flight.add(series)
                try:
                    await self._write_next(series)
                finally:
                    self._in_flight.discard(series)
        finally:
            # leave the pool now, not in a done-callback a turn later: a write queued in
            # between would find the pool full and wait for the next one
            task = asyncio.current_task()
            if task is not None:
                self._pool.discard(task)

    async def _write_next(self, series: int) -> None:
        # The write stays queued (and counts towards MAX_QUEUED) until a slot is free; a newer
        # count that arrives meanwhile replaces it.
        async with self._api_slot():
            write = self._queued.pop(series, None)
            if write is None:
                return
            try:
                async with asyncio.timeout(self._timeout):
                    await self._send(write)
            except (ApiException, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                self._dropped(write, reason=short_reason(exc), detail=api_error_message(exc))
            except Exception as exc:  # a bug: never let it end the writer quietly
                log.exception("event_write_crashed", event_reason=write.draft.reason)
                self._dropped(write, reason="error", detail=repr(exc))

    def _api_slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        if self._api_slots is None:
            return contextlib.nullcontext()
        return self._api_slots.slot(Priority.EVENT)

    async def _send(self, write: EventWrite) -> None:
        name = self._names.get(write.series)
        if name is not None:
            try:
                await self._core.patch_namespaced_event(
                    name,
                    self._namespace,
                    self._patch(write),
                    _request_timeout=self._timeout,
                    **MERGE_PATCH,
                )
                self._on_written("patch")
                return
            except ApiException as exc:
                if status_of(exc) != 404:
                    raise
        # client-go's name: the object's name and the time in nanoseconds (hex); the series
        # number keeps two series written within one clock tick apart.
        stamp = int(self._clock.wall() * 1e9)
        name = f"{write.draft.involved.name}.{stamp:x}{write.series:x}"
        await self._core.create_namespaced_event(
            self._namespace, self._body(write, name=name), _request_timeout=self._timeout
        )
        self._names[write.series] = name
        while len(self._names) > MAX_NAMES:
            self._names.popitem(last=False)
        self._on_written("create")

    def _body(self, write: EventWrite, *, name: str) -> Any:
        draft = write.draft
        involved = draft.involved
        reference = {
            "apiVersion": involved.api_version,
            "kind": involved.kind,
            "name": involved.name,
            "namespace": self._namespace,
        }
        if involved.uid is not None:
            reference["uid"] = involved.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": self._namespace},
            "involvedObject": reference,
            "reason": draft.reason,
            "message": draft.message,
            "type": draft.type,
            "count": write.count,
            "firstTimestamp": _timestamp(write.first_seen),
            "lastTimestamp": _timestamp(write.last_seen),
            "source": {"component": SOURCE_COMPONENT},
            "reportingComponent": REPORTING_CONTROLLER,
            "reportingInstance": self._instance,
        }

    @staticmethod
    def _patch(write: EventWrite) -> dict[str, Any]:
        return {
            "count": write.count,
            "lastTimestamp": _timestamp(write.last_seen),
            "message": write.draft.message,
        }

    def _dropped(self, write: EventWrite, *, reason: str, detail: str) -> None:
        self._on_dropped(reason)
        # A person must act on a refusal (RBAC): said once per reason; an unavailable API
        # server is said by the pod gateway already, so each dropped Event is debug only.
        warn = reason in ("forbidden", "unauthorized") and reason not in self._warned
        self._warned.add(reason)
        (log.warning if warn else log.debug)(
            "event_dropped",
            reason=reason,
            event_reason=write.draft.reason,
            object=f"{write.draft.involved.kind}/{write.draft.involved.name}",
            detail=detail,
        )


def _timestamp(wall: float) -> str:
    moment = datetime.datetime.fromtimestamp(wall, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
