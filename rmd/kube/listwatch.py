"""The two reads a reflector makes: a paged LIST and one WATCH stream, as raw JSON.

Plain dicts, no model deserialization (cheap for thousands of objects). No retries and no
policy here: errors raise ``ApiException`` (status, the API server's ``Status`` body,
headers), aiohttp errors or timeouts, and the caller decides what to do
(:mod:`rmd.kube.reflector`, :meth:`rmd.kube.pods.PodGateway.list`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

Json = dict[str, Any]
Timeout = tuple[float, float]  # (connect, read) seconds

# Objects per LIST page. Smaller than client-go's 500 for memory: a page of 500 pods is 3 MB of
# JSON and about 20 MB once parsed, and the daemon's RSS keeps that high-water mark after each
# resync (CPython keeps its arenas); 100 per page cost 4 MB, for 30 requests per 3,000 pods
# every resync instead of 6 (docs/PERFORMANCE.md, "Memory").
LIST_PAGE_SIZE = 100
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceQuery:
    """Which objects to list and watch: a core/v1 resource, in one namespace or all."""

    resource: str = "pods"  # plural, as in the URL
    namespace: str | None = None  # None: all namespaces
    label_selector: str = ""

    @property
    def path(self) -> str:
        if self.namespace is None:
            return f"/api/v1/{self.resource}"
        return f"/api/v1/namespaces/{self.namespace}/{self.resource}"

    def describe(self) -> str:
        where = "all namespaces" if self.namespace is None else f"namespace {self.namespace}"
        return f"{self.resource} in {where}"

    def query(self) -> list[tuple[str, str]]:
        return [("labelSelector", self.label_selector)] if self.label_selector else []


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One line of a watch: ADDED, MODIFIED, DELETED or BOOKMARK, the object, and the
    object's resourceVersion ("" if it has none)."""

    type: str
    object: Json
    resource_version: str


class WatchStreamError(Exception):
    """The watch sent something that is not a watch event."""


async def list_objects(
    api: client.ApiClient,
    query: ResourceQuery,
    *,
    timeout: Timeout,
    page_size: int = LIST_PAGE_SIZE,
) -> tuple[list[Json], str]:
    """Every object ``query`` selects, as the API server wrote it (without
    ``metadata.managedFields``), and the list's resourceVersion: :func:`list_converted`
    keeping each object whole."""
    return await list_converted(
        api, query, convert=whole_object, timeout=timeout, page_size=page_size
    )


async def list_converted(
    api: client.ApiClient,
    query: ResourceQuery,
    *,
    convert: Callable[[Json], T],
    timeout: Timeout,
    page_size: int = LIST_PAGE_SIZE,
) -> tuple[list[T], str]:
    """``convert`` of every object ``query`` selects, and the list's resourceVersion.

    Paged (``limit`` / ``continue``); a continue token that expires mid-way (410) starts the
    list over, so the result is one consistent snapshot. Each page's objects are converted
    as the page is read and the page is dropped before the next one is asked for: a list of
    3,000 pods holds one page of parsed JSON at a time, not all of them (the reflector keeps
    a small record per pod, :func:`rmd.kube.observe.observe_pod`).
    """
    while True:
        items: list[T] = []
        resource_version = ""
        token = ""
        while True:
            params = [*query.query(), ("limit", str(page_size))]
            if token:
                params.append(("continue", token))
            try:
                async with _get(api, query.path, params=params, timeout=timeout) as response:
                    page = _json_object(await response.read())
            except ApiException as error:
                if error.status == 410 and token:
                    break  # the continue token expired: list again from the start
                raise
            items.extend(
                convert(item) for item in page.get("items") or [] if isinstance(item, dict)
            )
            metadata = _mapping(page.get("metadata"))
            resource_version = resource_version or str(metadata.get("resourceVersion") or "")
            token = str(metadata.get("continue") or "")
            del page  # its objects are converted: not held while the next page is read
            if not token:
                return items, resource_version


def whole_object(item: Json) -> Json:
    """The object without ``metadata.managedFields`` (nothing in rmd reads them; they are a
    large part of every pod)."""
    metadata = item.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return item


@asynccontextmanager
async def open_watch(
    api: client.ApiClient,
    query: ResourceQuery,
    *,
    resource_version: str | None,
    timeout_seconds: int,
    timeout: Timeout,
) -> AsyncIterator[AsyncIterator[WatchEvent]]:
    """Open one watch (with bookmarks) and yield its events once the server has answered.

    The server ends the stream after ``timeout_seconds``; nothing read for ``timeout[1]``
    seconds raises a timeout error out of the iteration. An ``ERROR`` event raises
    ``ApiException`` with the Status it carries (410 when the version is too old).
    """
    params = [
        *query.query(),
        ("watch", "true"),
        ("allowWatchBookmarks", "true"),
        ("timeoutSeconds", str(timeout_seconds)),
    ]
    if resource_version:
        params.append(("resourceVersion", resource_version))
    async with _get(api, query.path, params=params, timeout=timeout) as response:
        yield _events(response)


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[WatchEvent]:
    while True:
        line = await response.content.readline()
        if not line:
            return  # the server ended the stream (its timeoutSeconds)
        if not line.strip():
            continue
        yield _event(line)


def _event(line: bytes) -> WatchEvent:
    try:
        parsed = json.loads(line)
    except ValueError:
        raise WatchStreamError(f"not a watch event: {line[:200]!r}") from None
    if not isinstance(parsed, dict):
        raise WatchStreamError(f"not a watch event: {line[:200]!r}")
    kind = parsed.get("type")
    obj = parsed.get("object")
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise WatchStreamError(f"watch event without type or object: {line[:200]!r}")
    if kind == "ERROR":
        error = ApiException(
            status=int(obj.get("code") or 500),
            reason=f"{obj.get('reason') or 'Error'}: {obj.get('message') or ''}",
        )
        error.body = json.dumps(obj).encode()
        raise error
    version = _mapping(obj.get("metadata")).get("resourceVersion")
    return WatchEvent(kind, obj, str(version or ""))


async def call_json(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Json | None = None,
    params: list[tuple[str, str]] | None = None,
    timeout: Timeout,
) -> Json:
    """One request whose answer is a JSON object (GET, POST, PUT of one object), as a dict:
    the object exactly as the API server wrote it (no model round trip). A non-2xx answer
    raises ``ApiException``."""
    async with _get(
        api, path, params=params or [], timeout=timeout, method=method, body=body
    ) as response:
        return _json_object(await response.read())


async def call_discarding_answer(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    params: list[tuple[str, str]],
    body: Json,
    content_type: str,
    timeout: Timeout,
) -> None:
    """A write whose answer is not used (a label patch): the answer is read to its end, so
    the connection is kept for the next request, and dropped: no models are built from it.
    A non-2xx answer raises ``ApiException`` as the generated client's methods do."""
    async with _get(
        api,
        path,
        params=params,
        timeout=timeout,
        method=method,
        body=body,
        content_type=content_type,
    ) as response:
        await response.read()


@asynccontextmanager
async def _get(
    api: client.ApiClient,
    path: str,
    *,
    params: list[tuple[str, str]],
    timeout: Timeout,
    method: str = "GET",
    body: Json | None = None,
    content_type: str = "application/json",
) -> AsyncIterator[aiohttp.ClientResponse]:
    """``method`` ``path``; raise ``ApiException`` for a non-2xx answer, else yield the
    response."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    response = cast(
        aiohttp.ClientResponse,
        await api.call_api(
            path,
            method,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout(timeout),
        ),
    )
    try:
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = await response.read()
            error.headers = response.headers
            raise error
        yield response
    finally:
        response.release()


def client_timeout(connect_and_read: Timeout) -> aiohttp.ClientTimeout:
    """(connect, read) seconds as aiohttp wants them; read: the longest silence between bytes."""
    connect, read = connect_and_read
    return aiohttp.ClientTimeout(connect=connect, sock_connect=connect, sock_read=read)


def _json_object(data: bytes) -> Json:
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ApiException(status=0, reason="the API server answered with a non-object")
    return parsed


def _mapping(value: object) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], value) if isinstance(value, Mapping) else {}
