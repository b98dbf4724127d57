"""One reflector: keep a picture of Kubernetes objects current (client-go's pattern).

* LIST (paged, raw JSON, each object turned into the consumer's record by ``convert`` as its
  page is read) → ``on_snapshot`` with every record → WATCH from the list's
  resourceVersion, with bookmarks, a server-side timeout and a client read timeout.
* The stream ends normally (server timeout) → watch again from the last resourceVersion
  seen (events and bookmarks both move it).
* 410 Gone (HTTP or an in-stream ERROR) → LIST again, then watch from the new version.
* Nothing read for ``read_timeout`` seconds on an open watch (the daemon's
  ``rmd.kubernetes.watch-idle-timeout``) → renew it at once from the last version. API
  servers before 1.27 send no periodic bookmarks, so a quiet watch goes silent: that is
  routine, not a failure.
* Dropped connection, connect timeout, 429/5xx → reconnect from the last resourceVersion
  after a backoff (``Retry-After`` honoured). 401/403 → one clear log line naming the missing
  permission, and keep trying with backoff. Nothing makes :meth:`Reflector.run` return but
  cancellation.
* Every ``resync_interval`` a full LIST again as a safety net; the watch is restarted from
  that list, so a snapshot never goes back in time behind an event.

Failures are counted while they follow each other: a watch that was healthy (it delivered an
event, lasted a while, or went quiet on an open connection) starts the count again. After
``unsynced_after_failures`` in a row, or at once when forbidden, ``synced`` turns False, and
only a successful LIST makes it True again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog
from kubernetes_asyncio import client

from rmd.kube.listwatch import (
    Json,
    ResourceQuery,
    WatchEvent,
    list_converted,
    open_watch,
)
from rmd.kube.retry import (
    RequestObserver,
    api_error_message,
    request_result,
    retry_after_seconds,
    short_reason,
    status_of,
)
from rmd.retry import Backoff, Pacing

log = structlog.get_logger(__name__)

EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReflectorTimings:
    """How long the reflector waits for what (seconds), and how it backs off."""

    server_timeout: float = 300.0  # the API server ends each watch after this
    read_timeout: float = 70.0  # nothing read on a watch for this long: renew it
    connect_timeout: float = 10.0
    list_timeout: float = 60.0  # read timeout of one LIST page
    resync_interval: float | None = 300.0  # a full LIST this often; None: only when needed
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.5, cap=30.0))
    # A stream that ends "normally" sooner than this after it opened counts as a failure
    # (a proxy that closes connections at once must not turn the loop into a busy loop).
    min_healthy_stream: float = 1.0
    unsynced_after_failures: int = 3  # failures in a row after which synced turns False

    def __post_init__(self) -> None:
        if self.server_timeout < 1:
            raise ValueError(f"ReflectorTimings.server_timeout must be >= 1 s, got {self}")
        for name in ("read_timeout", "connect_timeout", "list_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ReflectorTimings.{name} must be positive, got {self}")
        if self.resync_interval is not None and self.resync_interval <= 0:
            raise ValueError(
                f"ReflectorTimings.resync_interval must be positive (None: never), got {self}"
            )
        if self.unsynced_after_failures < 1:
            raise ValueError(f"ReflectorTimings.unsynced_after_failures must be >= 1, got {self}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReflectorCallbacks(Generic[T]):
    """What the reflector reports. ``convert`` turns each object (raw JSON) into the record
    the consumer keeps, as each LIST page or event is read: the raw objects are dropped at
    once, so a resync never holds every object's whole JSON (a pod's is kilobytes, the
    daemon needs a few fields). Exceptions from ``convert`` or ``on_event`` on an event are
    logged and answered with a fresh snapshot (the consumer lost an event); from ``convert``
    or ``on_snapshot`` on a LIST, retried as a failed LIST."""

    convert: Callable[[Json], T]
    on_snapshot: Callable[[list[T]], None]
    on_event: Callable[[str, T], None]  # ADDED, MODIFIED or DELETED
    on_restart: Callable[[str], None] | None = None  # why the watch was restarted
    on_list_started: Callable[[], None] | None = None  # a LIST goes out now
    on_request: RequestObserver | None = None  # each LIST request: ("list", result, seconds)


@dataclass(frozen=True, slots=True)
class _StreamEnd:
    """How one watch request ended."""

    healthy: bool  # it opened and then delivered, lasted, or went quiet
    error: Exception | None = None
    idle: bool = False  # opened, then nothing read for read_timeout


class Reflector(Generic[T]):
    """Lists and watches ``query`` until cancelled; see the module docstring."""

    def __init__(
        self,
        api: client.ApiClient,
        query: ResourceQuery,
        *,
        callbacks: ReflectorCallbacks[T],
        timings: ReflectorTimings | None = None,
        pacing: Pacing | None = None,
        name: str = "watch",
    ) -> None:
        self._api = api
        self._query = query
        self._callbacks = callbacks
        self._timings = timings if timings is not None else ReflectorTimings()
        self._pacing = pacing if pacing is not None else Pacing()
        self._name = name  # prefix of the log events: "pod_watch" → pod_watch_listed, ...

        self._synced = False
        self._synced_event = asyncio.Event()
        self._resync_requested = False
        self._watch_scope: asyncio.Timeout | None = None
        self._snapshots_delivered = 0
        self._listing = False
        self._snapshot_changed = asyncio.Condition()
        self._resource_version: str | None = None
        self._next_resync_at = 0.0

    # ------------------------------------------------------------------ public

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def resource_version(self) -> str | None:
        """The last resourceVersion seen (list, event or bookmark)."""
        return self._resource_version

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until synced; False if ``timeout`` seconds pass first."""
        if self._synced:
            return True
        try:
            async with asyncio.timeout(timeout):  # wait_for may swallow a cancel on 3.11
                await self._synced_event.wait()
        except TimeoutError:
            return self._synced
        return True

    async def resync_now(self) -> None:
        """Restart from a fresh LIST and return once its snapshot has been delivered.

        Needs :meth:`run` to be running; wrap in a timeout if the API may be unreachable.
        """
        target = self._snapshots_delivered + (2 if self._listing else 1)
        self._request_resync()
        async with self._snapshot_changed:
            await self._snapshot_changed.wait_for(lambda: self._snapshots_delivered >= target)

    async def run(self) -> None:
        """List and watch until cancelled. Errors are logged and retried, never raised."""
        need_list = True
        failures = 0
        self._log_info("starting", what=self._query.describe(), selector=self._query.label_selector)
        while True:
            if need_list or self._resync_due():
                try:
                    await self._list_and_snapshot()
                except Exception as error:
                    failures += 1
                    await self._after_failure(error, verb="list", failures=failures)
                    need_list = True  # a failed (re)list is retried before any watch
                    continue
                need_list = False
            end = await self._watch_once()
            if end.healthy:
                failures = 0
            if end.idle:
                self._restarted("idle")
                log.debug(
                    f"{self._name}_idle",
                    read_timeout=self._timings.read_timeout,
                    action="reconnecting",
                )
            elif end.error is not None:
                failures += 1
                need_list = await self._after_failure(end.error, verb="watch", failures=failures)
            elif not end.healthy:
                failures += 1
                self._restarted("ended-early")
                if failures >= self._timings.unsynced_after_failures:
                    self._set_synced(False)
                    need_list = True
                await self._pacing.sleep(self._backoff(failures))

    # ------------------------------------------------------------------ list

    def _resync_due(self) -> bool:
        deadline = self._resync_deadline()
        return deadline is not None and asyncio.get_running_loop().time() >= deadline

    def _resync_deadline(self) -> float | None:
        if self._resync_requested:
            return asyncio.get_running_loop().time()
        if self._timings.resync_interval is None:
            return None
        return self._next_resync_at

    def _request_resync(self) -> None:
        self._resync_requested = True
        scope = self._watch_scope
        if scope is not None and not scope.expired():  # interrupt the open watch
            scope.reschedule(asyncio.get_running_loop().time())

    async def _list_and_snapshot(self) -> None:
        self._listing = True
        self._resync_requested = False
        try:
            if self._callbacks.on_list_started is not None:
                self._callbacks.on_list_started()
            items, resource_version = await self._timed_list()
            self._resource_version = resource_version or None
            if self._timings.resync_interval is not None:
                loop = asyncio.get_running_loop()
                self._next_resync_at = loop.time() + self._timings.resync_interval
            self._callbacks.on_snapshot(items)
        finally:
            self._listing = False
        self._set_synced(True)
        self._log_info("listed", objects=len(items), resource_version=resource_version)
        async with self._snapshot_changed:
            self._snapshots_delivered += 1
            self._snapshot_changed.notify_all()

    async def _timed_list(self) -> tuple[list[T], str]:
        """One (paged) LIST, reported to ``on_request`` with its result and duration."""
        observe = self._callbacks.on_request
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            listed = await list_converted(
                self._api,
                self._query,
                convert=self._callbacks.convert,
                timeout=(self._timings.connect_timeout, self._timings.list_timeout),
            )
        except Exception as error:
            if observe is not None:
                observe("list", request_result(error), loop.time() - started)
            raise
        if observe is not None:
            observe("list", "success", loop.time() - started)
        return listed

    # ------------------------------------------------------------------ watch

    async def _watch_once(self) -> _StreamEnd:
        """One watch request, until the stream ends, a resync is due, or it fails."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        requested = self._watch_timeout_seconds()
        healthy_after = min(self._timings.min_healthy_stream, 0.5 * requested)
        opened = False
        events = 0
        scope = asyncio.timeout_at(self._resync_deadline())
        self._watch_scope = scope
        try:
            async with (
                scope,
                open_watch(
                    self._api,
                    self._query,
                    resource_version=self._resource_version,
                    timeout_seconds=requested,
                    timeout=(self._timings.connect_timeout, self._timings.read_timeout),
                ) as stream,
            ):
                opened = True
                async for event in stream:
                    events += 1
                    self._receive(event)
        except Exception as error:
            if scope.expired():
                return _StreamEnd(healthy=True)  # a resync is due or requested: list now
            lasted = events > 0 or loop.time() - started >= healthy_after
            if opened and isinstance(error, TimeoutError):
                return _StreamEnd(healthy=True, idle=True)
            return _StreamEnd(healthy=opened and lasted, error=error)
        finally:
            self._watch_scope = None
        return _StreamEnd(healthy=events > 0 or loop.time() - started >= healthy_after)

    def _watch_timeout_seconds(self) -> int:
        seconds = self._timings.server_timeout
        deadline = self._resync_deadline()
        if deadline is not None:
            seconds = min(seconds, max(deadline - asyncio.get_running_loop().time(), 1.0))
        return max(1, int(seconds))

    def _receive(self, event: WatchEvent) -> None:
        if event.resource_version:
            self._resource_version = event.resource_version
        if event.type == "BOOKMARK":
            return
        if event.type not in EVENT_TYPES:
            log.warning(f"{self._name}_unknown_event", type=event.type)
            return
        try:
            self._callbacks.on_event(event.type, self._callbacks.convert(event.object))
        except Exception:
            # The consumer lost this event: a fresh snapshot lets it catch up.
            metadata = event.object.get("metadata") or {}
            log.exception(
                f"{self._name}_consumer_failed",
                event_type=event.type,
                name=metadata.get("name") if isinstance(metadata, dict) else None,
            )
            self._request_resync()

    # ------------------------------------------------------------------ failures

    async def _after_failure(self, error: Exception, *, verb: str, failures: int) -> bool:
        """Report a failed LIST or WATCH and back off; True if the next step must be a LIST."""
        if status_of(error) == 410:
            # The resourceVersion is too old (etcd compacted): start from a new LIST.
            self._restarted("gone")
            self._log_info("gone", verb=verb, message=api_error_message(error))
            if failures > 1:  # 410 again right after a fresh list: slow down
                await self._pacing.sleep(self._backoff(failures - 1))
            return True
        reason = short_reason(error)
        self._restarted(reason)
        self._log_failure(error, verb=verb, reason=reason, failures=failures)
        if reason in ("forbidden", "unauthorized"):
            self._set_synced(False)
        if failures >= self._timings.unsynced_after_failures:
            self._set_synced(False)
        await self._pacing.sleep(self._backoff(failures, retry_after=retry_after_seconds(error)))
        return not self._synced  # only a successful LIST makes the reflector synced again

    def _set_synced(self, synced: bool) -> None:
        if synced == self._synced:
            return
        self._synced = synced
        if synced:
            self._synced_event.set()
        else:
            self._synced_event.clear()
            log.warning(f"{self._name}_unsynced", what=self._query.describe())

    def _restarted(self, reason: str) -> None:
        if self._callbacks.on_restart is not None:
            self._callbacks.on_restart(reason)

    def _backoff(self, failures: int, *, retry_after: float | None = None) -> float:
        return self._timings.backoff.delay(
            failures, uniform=self._pacing.uniform, retry_after=retry_after
        )

    def _log_info(self, event: str, **fields: object) -> None:
        log.info(f"{self._name}_{event}", **fields)

    def _log_failure(self, error: Exception, *, verb: str, reason: str, failures: int) -> None:
        message = api_error_message(error)
        name = self._name
        if reason in ("forbidden", "unauthorized") and failures != 1 and failures % 10 != 0:
            # Said clearly on the first attempt (and every tenth): no log flood meanwhile.
            log.debug(f"{name}_still_refused", verb=verb, reason=reason, attempt=failures)
        elif reason == "forbidden":
            resource = self._query.resource
            log.error(
                f"{name}_forbidden",
                problem=f"cannot {verb} {self._query.describe()}: grant get/list/watch"
                f" on {resource} to the service account",
                message=message,
                attempt=failures,
            )
        elif reason == "unauthorized":
            log.error(
                f"{name}_unauthorized",
                problem="the API server rejected the credentials: check the token",
                message=message,
                attempt=failures,
            )
        elif reason == "error":
            log.error(
                f"{name}_failed", verb=verb, message=message, attempt=failures, exc_info=error
            )
        else:
            log.warning(
                f"{name}_interrupted", verb=verb, reason=reason, message=message, attempt=failures
            )
