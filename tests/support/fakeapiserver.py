"""A small in-process stand-in for kube-apiserver's pod list and watch, for fast unit tests.

It speaks what the reflector reads, as kube-apiserver does:

* ``GET /api/v1/pods`` and ``/api/v1/namespaces/NS/pods``: a ``PodList`` with
  ``metadata.resourceVersion``; ``labelSelector`` (``k=v,...``); ``limit`` and ``continue``
  pages, served from the snapshot of the first page (a consistent list); a continue token
  from before a compaction answers HTTP 410 ``Expired``.
* the same with ``?watch=1``/``true``: HTTP 200, then one JSON event a line (``ADDED``,
  ``MODIFIED``, ``DELETED``) from ``resourceVersion`` on (none given: the current pods as
  ADDED first); a version older than the last compaction gets one in-stream ``ERROR``
  event with a 410 ``Status``; ``timeoutSeconds`` ends the stream normally; ``BOOKMARK``
  events (only with ``allowWatchBookmarks``) when :meth:`FakeApiServer.bookmark` is called
  (kube-apiserver 1.20 sends none by itself, so a quiet watch is silent);
  :meth:`FakeApiServer.end_watches` ends every stream as its timeout would.
* Failures on demand: :meth:`FakeApiServer.fail` answers a ``Status`` error (with
  ``Retry-After`` if asked), ``status=0`` closes the connection without an answer;
  :meth:`FakeApiServer.drop_watches` cuts every open watch.

Pods are changed by the test directly (:meth:`put_pod`, :meth:`delete_pod`); each change
gets the next resourceVersion, as etcd's revision would.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

Json = dict[str, Any]

_POD_PATH = re.compile(r"^/api/v1/(?:namespaces/(?P<namespace>[^/]+)/)?pods$")
_REASONS = {401: "Unauthorized", 403: "Forbidden", 410: "Expired", 429: "TooManyRequests"}


def status_body(code: int, message: str, *, retry_after: int | None = None) -> Json:
    """A Kubernetes ``Status`` object, as the API server sends with every error."""
    body: Json = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "InternalError" if code >= 500 else "BadRequest"),
        "code": code,
    }
    if retry_after is not None:
        body["details"] = {"retryAfterSeconds": retry_after}
    return body


@dataclass
class Failure:
    """A programmed failure; ``times=None`` fires for ever. ``hits`` counts firings."""

    status: int  # 0: close the connection without an answer
    watch: bool | None  # True: watches only; False: lists only; None: both
    times: int | None
    message: str
    retry_after: int | None
    hits: int = 0

    def applies(self, *, is_watch: bool) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return self.watch is None or self.watch == is_watch


@dataclass(frozen=True)
class SeenRequest:
    """One request as the fake saw it; ``status`` is what it answered (0: no answer)."""

    path: str
    query: dict[str, str]
    status: int

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", "").lower() in ("1", "true")


@dataclass
class _Watch:
    namespace: str | None
    selector: dict[str, str]
    bookmarks: bool
    request: web.Request
    lines: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)  # None: the end


class FakeApiServer:
    """See the module docstring. Use as an async context manager."""

    def __init__(self) -> None:
        self._revision = 1
        self._compacted = 0  # versions at or below this cannot be watched from
        self._pods: dict[tuple[str, str], Json] = {}
        # (revision, event type, the pod after, the pod before): what a watch replays and
        # what a paged list at an older revision is served from
        self._history: list[tuple[int, str, Json, Json | None]] = []
        self._watches: list[_Watch] = []
        self._failures: list[Failure] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self.requests: list[SeenRequest] = []
        # Called when a LIST asks for a page after the first (e.g. to compact in between).
        self.before_next_page: Callable[[], None] | None = None

    async def __aenter__(self) -> FakeApiServer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def configuration(self) -> client.Configuration:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{self._port}"
        return configuration

    # ------------------------------------------------------------------ the test's side

    @property
    def resource_version(self) -> str:
        return str(self._revision)

    def put_pod(self, namespace: str, name: str, *, labels: dict[str, str] | None = None) -> Json:
        """Create the pod (ADDED) or change it (MODIFIED); returns it as stored."""
        key = (namespace, name)
        old = self._pods.get(key)
        self._revision += 1
        pod: Json = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": old["metadata"]["uid"] if old else f"uid-{namespace}-{name}",
                "labels": dict(labels or {}),
                "resourceVersion": str(self._revision),
            },
            "spec": {},
            "status": {"phase": "Pending"},
        }
        self._pods[key] = pod
        self._record("MODIFIED" if old else "ADDED", pod, before=old)
        return pod

    def delete_pod(self, namespace: str, name: str) -> None:
        old = self._pods.pop((namespace, name))
        pod = copy.deepcopy(old)
        self._revision += 1
        pod["metadata"]["resourceVersion"] = str(self._revision)
        self._record("DELETED", pod, before=old)

    def compact(self) -> None:
        """Forget the history up to now (etcd compaction): older versions answer 410."""
        self._compacted = self._revision
        self._history.clear()

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current version on every watch that asked for them."""
        line = _line(
            "BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": str(self._revision)}}
        )
        for watch in self._watches:
            if watch.bookmarks:
                watch.lines.put_nowait(line)

    def fail(
        self,
        status: int,
        *,
        watch: bool | None = None,
        times: int | None = 1,
        message: str = "injected failure",
        retry_after: int | None = None,
    ) -> Failure:
        failure = Failure(status, watch, times, message, retry_after)
        self._failures.append(failure)
        return failure

    def end_watches(self) -> int:
        """End every open watch normally, as its ``timeoutSeconds`` would; how many ended."""
        ended = len(self._watches)
        for watch in self._watches:
            watch.lines.put_nowait(None)
        self._watches.clear()
        return ended

    def drop_watches(self) -> int:
        """Cut every open watch connection without ending the stream; how many were cut."""
        dropped = len(self._watches)
        for watch in self._watches:
            if watch.request.transport is not None:
                watch.request.transport.close()
            watch.lines.put_nowait(None)
        self._watches.clear()
        return dropped

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def watch_requests(self) -> list[SeenRequest]:
        return [r for r in self.requests if r.is_watch]

    def list_requests(self) -> list[SeenRequest]:
        return [r for r in self.requests if not r.is_watch]

    # ------------------------------------------------------------------ the API's side

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        is_watch = query.get("watch", "").lower() in ("1", "true")
        match = _POD_PATH.match(request.path)
        if match is None:
            return self._status(request, query, status_body(404, f"no route {request.path}"))
        failure = next((f for f in self._failures if f.applies(is_watch=is_watch)), None)
        if failure is not None:
            failure.hits += 1
            if failure.status == 0:
                self.requests.append(SeenRequest(request.path, query, 0))
                if request.transport is not None:
                    request.transport.close()
                raise ConnectionResetError("fake API server: connection closed on purpose")
            body = status_body(failure.status, failure.message, retry_after=failure.retry_after)
            return self._status(request, query, body)
        namespace = match.group("namespace")
        try:
            selector = _parse_selector(query.get("labelSelector", ""))
        except ValueError as error:
            return self._status(request, query, status_body(400, str(error)))
        if is_watch:
            return await self._watch(request, query, namespace=namespace, selector=selector)
        return self._list(request, query, namespace=namespace, selector=selector)

    def _status(self, request: web.Request, query: dict[str, str], body: Json) -> web.Response:
        self.requests.append(SeenRequest(request.path, query, int(body["code"])))
        headers: dict[str, str] = {}
        if "details" in body:
            headers["Retry-After"] = str(body["details"]["retryAfterSeconds"])
        return web.json_response(body, status=int(body["code"]), headers=headers)

    def _list(
        self,
        request: web.Request,
        query: dict[str, str],
        *,
        namespace: str | None,
        selector: dict[str, str],
    ) -> web.Response:
        revision, start = self._revision, 0
        if query.get("continue"):
            if self.before_next_page is not None:
                self.before_next_page()
            token = json.loads(base64.b64decode(query["continue"]))
            revision, start = int(token["rv"]), int(token["start"])
            if revision < self._compacted:
                message = "The provided continue parameter is too old to display a consistent list"
                return self._status(request, query, status_body(410, message))
        pods = [
            pod
            for (ns, _), pod in sorted(self._state_at(revision).items())
            if _selected(pod, namespace=namespace, selector=selector)
        ]
        limit = int(query.get("limit") or 0) or len(pods) or 1
        page = pods[start : start + limit]
        metadata: Json = {"resourceVersion": str(revision)}
        if start + limit < len(pods):
            token_json = json.dumps({"rv": revision, "start": start + limit})
            metadata["continue"] = base64.b64encode(token_json.encode()).decode()
        self.requests.append(SeenRequest(request.path, query, 200))
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": page}
        return web.json_response(body)

    async def _watch(
        self,
        request: web.Request,
        query: dict[str, str],
        *,
        namespace: str | None,
        selector: dict[str, str],
    ) -> web.StreamResponse:
        self.requests.append(SeenRequest(request.path, query, 200))
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        await response.prepare(request)
        since = query.get("resourceVersion", "")
        if since and int(since) < self._compacted:
            error = status_body(410, f"too old resource version: {since} ({self._compacted})")
            await response.write(_line("ERROR", error))
            return response
        watch = _Watch(
            namespace=namespace,
            selector=selector,
            bookmarks=query.get("allowWatchBookmarks", "").lower() == "true",
            request=request,
        )
        if since:
            replay = [(kind, pod) for rev, kind, pod, _ in self._history if rev > int(since)]
        else:
            replay = [("ADDED", pod) for _, pod in sorted(self._pods.items())]
        for kind, pod in replay:
            if _selected(pod, namespace=namespace, selector=selector):
                watch.lines.put_nowait(_line(kind, pod))
        self._watches.append(watch)
        try:
            async with asyncio.timeout(float(query.get("timeoutSeconds") or 1800)):
                while (line := await watch.lines.get()) is not None:
                    await response.write(line)
        except TimeoutError:
            pass  # timeoutSeconds: the stream ends normally
        except ConnectionResetError:
            return response  # the client went away
        finally:
            if watch in self._watches:
                self._watches.remove(watch)
        if request.transport is None or request.transport.is_closing():
            return response  # dropped on purpose: no orderly end
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ history

    def _record(self, kind: str, pod: Json, *, before: Json | None) -> None:
        self._history.append((self._revision, kind, copy.deepcopy(pod), before))
        for watch in self._watches:
            if _selected(pod, namespace=watch.namespace, selector=watch.selector):
                watch.lines.put_nowait(_line(kind, pod))

    def _state_at(self, revision: int) -> dict[tuple[str, str], Json]:
        """The pods as they were at ``revision``: the current ones, later changes undone."""
        state = {key: copy.deepcopy(pod) for key, pod in self._pods.items()}
        for rev, _, pod, before in reversed(self._history):
            if rev <= revision:
                break
            if before is None:
                state.pop(_key(pod), None)
            else:
                state[_key(pod)] = copy.deepcopy(before)
        return state


def _key(pod: Json) -> tuple[str, str]:
    return (pod["metadata"]["namespace"], pod["metadata"]["name"])


def _line(kind: str, obj: Json) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _parse_selector(text: str) -> dict[str, str]:
    selector: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"unable to parse requirement: {part!r} (the fake knows k=v only)")
        selector[key] = value
    return selector


def _selected(pod: Json, *, namespace: str | None, selector: dict[str, str]) -> bool:
    metadata = pod["metadata"]
    if namespace is not None and metadata["namespace"] != namespace:
        return False
    labels = metadata.get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())
