"""Follow the TaskManager pods: one label-selector LIST, then WATCH from its resourceVersion.

The loop (what kopf and client-go's reflector do, plus what Flink lacked):

* LIST (paged, raw JSON) → ``on_snapshot`` with every pod → WATCH from the list's
  resourceVersion, with bookmarks, a server-side timeout and a client read timeout.
* The stream ends normally (server timeout) → watch again from the last resourceVersion
  seen (events and bookmarks both move it).
* 410 Gone (HTTP or an in-stream ERROR) → LIST again, then watch from the new version.
* Nothing read for ``read_timeout`` seconds → reconnect at once from the last version (API
  servers before 1.27 send no periodic bookmarks, so a quiet watch goes silent).
* Dropped connection, connect timeout, 429/5xx → reconnect from the last resourceVersion
  after a full-jitter backoff. 401/403 → one clear log line naming the missing permission, and
  keep trying with backoff. Nothing makes :meth:`PodWatcher.run` return but cancellation.
* Every ``resync_interval`` a full LIST again (``on_snapshot``) as a safety net; the watch
  is restarted from that list, so a snapshot never goes back in time behind an event.

``synced`` is True once a LIST succeeded and while the watch follows it; it turns False
when listing/watching fails persistently or is forbidden, and only a successful LIST makes it
True again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import aiohttp
import structlog
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.core.model import PodObservation
from rmd.kube.observe import observe_pod
from rmd.kube.pods import list_pods_raw
from rmd.kube.retry import api_error_message, backoff_delay, status_of

log = structlog.get_logger(__name__)

EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})
# Consecutive failed attempts after which the watcher no longer claims to be synced.
UNSYNCED_AFTER_FAILURES = 3
# A stream that ends "normally" sooner than this after it opened is treated as a failure
# (a proxy that closes connections at once must not turn the loop into a busy loop).
MIN_HEALTHY_STREAM_SECONDS = 1.0


class WatchStreamError(Exception):
    """The watch answered something that is not a watch event (e.g. an HTML error page)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class RawWatch(watch.Watch):
    """A Watch that keeps events as JSON dicts: no model deserialization per event."""

    def get_return_type(self, func: object) -> str:
        return ""


class PodWatcher:
    """Keeps the daemon's picture of its pods current; see the module docstring."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        label_selector: str,
        on_event: Callable[[str, PodObservation], None],
        on_snapshot: Callable[[list[PodObservation]], None],
        server_timeout: float = 300,
        read_timeout: float = 70,
        resync_interval: float = 300,
        on_restart: Callable[[str], None] | None = None,
        on_list_started: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        connect_timeout: float = 10,
        list_timeout: float = 60,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._label_selector = label_selector
        self._on_event = on_event
        self._on_snapshot = on_snapshot
        self._server_timeout = server_timeout
        self._read_timeout = read_timeout
        self._resync_interval = resync_interval
        self._on_restart = on_restart
        # Called as each LIST is sent: a pod created after that may be missing from it.
        self._on_list_started = on_list_started
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._connect_timeout = connect_timeout
        self._list_timeout = list_timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max

        self._synced = False
        self._synced_event = asyncio.Event()
        self._resync_requested = asyncio.Event()
        self._snapshots_delivered = 0
        self._listing = False
        self._snapshot_changed = asyncio.Condition()
        self._resource_version: str | None = None
        self._next_resync_at = 0.0
        self._requested_watch_timeout = 1

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
        self._resync_requested.set()
        async with self._snapshot_changed:
            await self._snapshot_changed.wait_for(lambda: self._snapshots_delivered >= target)

    async def run(self) -> None:
        """List and watch until cancelled. Errors are logged and retried, never raised."""
        need_list = True
        failures = 0
        log.info("pod_watch_starting", namespace=self._namespace, selector=self._label_selector)
        while True:
            verb = "list"
            try:
                if need_list or self._resync_due():
                    await self._list_and_snapshot()
                    need_list = False
                verb = "watch"
                healthy = await self._watch_once()
                failures = 0 if healthy else failures + 1
                if not healthy:
                    self._restarted("ended-early")
                    if failures >= UNSYNCED_AFTER_FAILURES:
                        self._set_synced(False)
                        need_list = True
                    await self._sleep(self._backoff(failures))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if verb == "watch" and isinstance(exc, aiohttp.SocketTimeoutError):
                    # Nothing arrived for read_timeout seconds: a quiet namespace on an API
                    # server that sends no periodic bookmarks (< 1.27), or a dead connection.
                    # Either way, reconnecting from the last version at once is right.
                    self._restarted("idle")
                    log.debug(
                        "pod_watch_idle",
                        namespace=self._namespace,
                        read_timeout=self._read_timeout,
                        action="reconnecting",
                    )
                    continue
                failures += 1
                if verb == "list":
                    need_list = True  # a failed (re)list is retried before any watch
                if status_of(exc) == 410:
                    # The resourceVersion is too old (etcd compacted): start from a new LIST.
                    need_list = True
                    self._restarted("gone")
                    log.info(
                        "pod_watch_gone",
                        namespace=self._namespace,
                        verb=verb,
                        message=api_error_message(exc),
                    )
                    if failures > 1:  # 410 again right after a fresh list: slow down
                        await self._sleep(self._backoff(failures - 1))
                    continue
                reason = self._failure_reason(exc)
                self._restarted(reason)
                self._log_failure(exc, verb=verb, reason=reason, failures=failures)
                if reason in ("forbidden", "unauthorized") or failures >= UNSYNCED_AFTER_FAILURES:
                    self._set_synced(False)
                if not self._synced:
                    need_list = True  # only a successful LIST makes the watcher synced again
                await self._sleep(self._backoff(failures))

    # ------------------------------------------------------------------ list

    def _resync_due(self) -> bool:
        if self._resync_requested.is_set():
            return True
        return asyncio.get_running_loop().time() >= self._next_resync_at

    async def _list_and_snapshot(self) -> None:
        self._listing = True
        self._resync_requested.clear()
        if self._on_list_started is not None:
            self._on_list_started()
        try:
            items, resource_version = await list_pods_raw(
                self._api,
                namespace=self._namespace,
                label_selector=self._label_selector,
                request_timeout=(self._connect_timeout, self._list_timeout),
            )
            observations = [observe_pod(item) for item in items]
            self._resource_version = resource_version or None
            self._next_resync_at = asyncio.get_running_loop().time() + self._resync_interval
            self._on_snapshot(observations)
        finally:
            self._listing = False
        self._set_synced(True)
        log.info(
            "pod_watch_listed",
            namespace=self._namespace,
            pods=len(observations),
            resource_version=resource_version,
        )
        async with self._snapshot_changed:
            self._snapshots_delivered += 1
            self._snapshot_changed.notify_all()

    # ------------------------------------------------------------------ watch

    async def _watch_once(self) -> bool:
        """One watch request, until the stream ends, a resync is due, or it fails (raises).

        Returns False when the stream ended suspiciously early (counts as a failure).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        streaming = asyncio.create_task(self._stream(), name="pod-watch-stream")
        interrupt = asyncio.create_task(self._wait_for_resync(), name="pod-watch-resync-timer")
        try:
            done, _ = await asyncio.wait(
                {streaming, interrupt}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            streaming.cancel()
            interrupt.cancel()
            # Collects both outcomes (so none is left unretrieved); re-raised below.
            await asyncio.gather(streaming, interrupt, return_exceptions=True)
        if streaming in done:
            events = streaming.result()  # raises what the stream raised
            elapsed = loop.time() - started
            expected = min(MIN_HEALTHY_STREAM_SECONDS, 0.5 * self._requested_watch_timeout)
            return events > 0 or elapsed >= expected
        return True  # resync due or requested: the caller lists now

    async def _wait_for_resync(self) -> None:
        remaining = self._next_resync_at - asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(remaining, 0.0)):  # wait_for may swallow a cancel
                await self._resync_requested.wait()

    def _watch_timeout_seconds(self) -> int:
        remaining = self._next_resync_at - asyncio.get_running_loop().time()
        return max(1, int(min(self._server_timeout, max(remaining, 1.0))))

    async def _stream(self) -> int:
        """Consume one watch stream; returns the number of events (bookmarks included)."""
        core = client.CoreV1Api(self._api)
        count = 0
        self._requested_watch_timeout = self._watch_timeout_seconds()
        async with RawWatch() as stream_watch:
            kwargs: dict[str, Any] = {
                "label_selector": self._label_selector,
                "allow_watch_bookmarks": True,
                "timeout_seconds": self._requested_watch_timeout,
                "_request_timeout": (self._connect_timeout, self._read_timeout),
            }
            if self._resource_version:
                kwargs["resource_version"] = self._resource_version
            events = stream_watch.stream(core.list_namespaced_pod, self._namespace, **kwargs)
            async for event in events:
                _raise_for_http_error(stream_watch, event)
                if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
                    raise WatchStreamError(0, f"unexpected watch line: {str(event)[:200]}")
                count += 1
                kind = cast(str, event["type"])
                if stream_watch.resource_version:
                    self._resource_version = str(stream_watch.resource_version)
                if kind == "BOOKMARK":
                    continue
                if kind not in EVENT_TYPES:
                    log.warning("pod_watch_unknown_event", type=kind)
                    continue
                raw = event.get("raw_object")
                if not isinstance(raw, Mapping):
                    raise WatchStreamError(0, f"{kind} event without an object")
                self._deliver(kind, raw)
        return count

    def _deliver(self, kind: str, raw: Mapping[str, Any]) -> None:
        observation = observe_pod(raw)
        try:
            self._on_event(kind, observation)
        except Exception:
            # The consumer lost this event: a fresh snapshot lets it catch up.
            log.exception("pod_watch_consumer_failed", event_type=kind, pod=observation.name)
            self._resync_requested.set()

    # ------------------------------------------------------------------ failures

    def _set_synced(self, synced: bool) -> None:
        if synced == self._synced:
            return
        self._synced = synced
        if synced:
            self._synced_event.set()
        else:
            self._synced_event.clear()
            log.warning("pod_watch_unsynced", namespace=self._namespace)

    def _restarted(self, reason: str) -> None:
        if self._on_restart is not None:
            self._on_restart(reason)

    def _backoff(self, failures: int) -> float:
        return backoff_delay(
            failures, base_delay=self._backoff_base, max_delay=self._backoff_max, rng=self._rng
        )

    @staticmethod
    def _failure_reason(exc: BaseException) -> str:
        status = status_of(exc)
        if status == 403:
            return "forbidden"
        if status == 401:
            return "unauthorized"
        if status == 429:
            return "throttled"
        if 500 <= status <= 599:
            return "server-error"
        if status:
            return f"http-{status}"
        if isinstance(exc, TimeoutError):
            return "timeout"
        if isinstance(exc, aiohttp.ClientError | ConnectionError):
            return "disconnected"
        return "error"

    def _log_failure(self, exc: BaseException, *, verb: str, reason: str, failures: int) -> None:
        message = api_error_message(exc)
        if reason in ("forbidden", "unauthorized") and failures != 1 and failures % 10 != 0:
            # Said clearly on the first attempt (and every tenth): no log flood meanwhile.
            log.debug("pod_watch_still_refused", verb=verb, reason=reason, attempt=failures)
        elif reason == "forbidden":
            log.error(
                "pod_watch_forbidden",
                problem=f"cannot {verb} pods in namespace {self._namespace}: grant get/list/watch"
                " on pods to the service account",
                message=message,
                attempt=failures,
            )
        elif reason == "unauthorized":
            log.error(
                "pod_watch_unauthorized",
                problem="the API server rejected the credentials: check the token",
                message=message,
                attempt=failures,
            )
        elif reason == "error":
            log.error(
                "pod_watch_failed", verb=verb, message=message, attempt=failures, exc_info=exc
            )
        else:
            log.warning(
                "pod_watch_interrupted", verb=verb, reason=reason, message=message, attempt=failures
            )


def _raise_for_http_error(stream_watch: Any, event: object) -> None:
    """A non-2xx watch answer whose body is not a Status line (proxies, load balancers)."""
    response = stream_watch.resp
    status = getattr(response, "status", 200)
    if isinstance(status, int) and status >= 300:
        detail = event if isinstance(event, str) else "non-watch answer"
        error = ApiException(status=status, reason=str(detail).strip()[:500])
        error.headers = getattr(response, "headers", None)
        raise error
