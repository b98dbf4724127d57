"""The node emulator's API calls, as plain JSON dicts (no model deserialization).

Every call has a timeout; writes (status PATCHes, deletes) share a semaphore so hundreds of
pods cannot flood the API server at once. :func:`retry_until` retries transient errors
(429, 5xx, lost connections, timeouts) with capped, jittered exponential backoff until the
call succeeds or the caller stops caring (the pod is gone); other errors are raised.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.kube.retry import api_error_message, backoff_delay, is_retriable, status_of
from rmd.kube.watch import RawWatch

T = TypeVar("T")
Json = dict[str, Any]

log = structlog.get_logger(__name__)

_JSON = ["application/json"]
_OBJECT = {200: "object", 201: "object", 202: "object"}


@dataclass(frozen=True, kw_only=True)
class ApiTimeouts:
    request: tuple[float, float] = (5.0, 30.0)  # (connect, read) of a normal call
    list_read: float = 60.0
    watch_server: int = 60  # the API server ends a watch after this many seconds
    watch_read: float = 75.0  # longer than watch_server: a silent connection is dead


def client_timeout(connect_and_read: tuple[float, float]) -> aiohttp.ClientTimeout:
    connect, read = connect_and_read
    return aiohttp.ClientTimeout(connect=connect, sock_connect=connect, sock_read=read)


class ApiGaveUp(Exception):
    """:func:`retry_until` stopped because the caller no longer needs the result."""


async def retry_until(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    give_up: Callable[[], bool],
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    rng: random.Random | None = None,
) -> T:
    """Await ``call()`` until it succeeds; retry transient errors; raise others at once;
    raise :class:`ApiGaveUp` when ``give_up()`` turns true between attempts."""
    chance = rng if rng is not None else random.Random()
    failures = 0
    while True:
        if give_up():
            raise ApiGaveUp(what)
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not is_retriable(error):
                raise
            failures += 1
            # The n-th retry waits between half and all of min(max_delay, base_delay * 2**n).
            delay = backoff_delay(
                failures + 1,
                base_delay=base_delay,
                max_delay=max_delay,
                rng=chance,
                min_fraction=0.5,
            )
            log.warning(
                "emulator_api_retry",
                what=what,
                status=status_of(error),
                error=api_error_message(error),
                failures=failures,
                retry_in=round(delay, 2),
            )
            await asyncio.sleep(delay)


class EmulatorApi:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        max_concurrent_writes: int = 8,
        timeouts: ApiTimeouts | None = None,
    ) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._writes = asyncio.Semaphore(max_concurrent_writes)
        self.timeouts = timeouts or ApiTimeouts()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: tuple[float, float] | None = None,
    ) -> Json:
        result = await self._api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            response_types_map=_OBJECT,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=client_timeout(timeout or self.timeouts.request),
        )
        return cast(Json, result) if isinstance(result, dict) else {}

    # ------------------------------------------------------------------ writes

    async def patch_pod_status(self, *, namespace: str, name: str, uid: str, status: Json) -> Json:
        """Merge-patch ``status``. The patch carries ``metadata.uid``: the API server refuses
        it (422, "field is immutable") if the name now belongs to another pod."""
        async with self._writes:
            return await self._call(
                "PATCH",
                f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                body={"metadata": {"uid": uid}, "status": status},
                content_type="application/merge-patch+json",
            )

    async def delete_pod_now(self, *, namespace: str, name: str, uid: str) -> bool:
        """Delete with grace period 0, only if the pod still has ``uid``. True if this call
        deleted it; False if it was already gone (404) or replaced (409)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        async with self._writes:
            try:
                await self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=body)
            except ApiException as error:
                if error.status in (404, 409):
                    return False
                raise
        return True

    # ------------------------------------------------------------------ reads

    async def _read_or_none(self, path: str) -> Json | None:
        try:
            return await self._call("GET", path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def read_config_map(self, *, namespace: str, name: str) -> Json | None:
        return await self._read_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    async def read_secret(self, *, namespace: str, name: str) -> Json | None:
        return await self._read_or_none(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    async def read_node(self, *, name: str) -> Json | None:
        return await self._read_or_none(f"/api/v1/nodes/{name}")

    async def list_pods(self) -> tuple[list[Json], str]:
        """All pods of all namespaces (paged), and the list's resourceVersion."""
        while True:
            items: list[Json] = []
            resource_version = ""
            token = ""
            while True:
                query: list[tuple[str, Any]] = [("limit", 500)]
                if token:
                    query.append(("continue", token))
                try:
                    page = await self._call(
                        "GET",
                        "/api/v1/pods",
                        query=query,
                        timeout=(self.timeouts.request[0], self.timeouts.list_read),
                    )
                except ApiException as error:
                    if error.status == 410 and token:
                        break  # the continue token expired: list again from the start
                    raise
                items.extend(item for item in page.get("items") or [] if isinstance(item, dict))
                meta = page.get("metadata") or {}
                resource_version = resource_version or str(meta.get("resourceVersion") or "")
                token = str(meta.get("continue") or "")
                if not token:
                    return items, resource_version

    async def watch_pods(self, *, resource_version: str) -> AsyncIterator[tuple[str, Json, str]]:
        """``(event type, pod, resourceVersion so far)`` until the server ends the stream.

        BOOKMARK events come through with an empty pod; a 410 or any error is raised.
        """
        async with RawWatch() as stream:
            events = stream.stream(
                self._core.list_pod_for_all_namespaces,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.timeouts.watch_server,
                _request_timeout=(self.timeouts.request[0], self.timeouts.watch_read),
            )
            async for event in events:
                if not isinstance(event, dict):
                    raise aiohttp.ClientPayloadError(f"not a watch event: {json.dumps(event)}")
                kind = str(event.get("type", ""))
                obj = event.get("raw_object")
                pod = obj if isinstance(obj, dict) and kind != "BOOKMARK" else {}
                yield kind, pod, str(stream.resource_version or resource_version)
