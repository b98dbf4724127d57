"""The node emulator's API calls, as plain JSON dicts (no model deserialization).

Every call has a timeout; writes (status PATCHes, deletes) share a semaphore so hundreds of
pods cannot flood the API server at once. :func:`retry_until` retries transient errors
(429, 5xx, lost connections, timeouts; the retry loop of :mod:`rmd.retry`) with capped,
jittered exponential backoff until the call succeeds or the caller stops caring (the pod is
gone); other errors are raised. The pod list and watch are :mod:`rmd_dev.emulator.watch`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.kube.listwatch import client_timeout
from rmd.kube.retry import api_error_message, is_retriable, retry_after_seconds, status_of
from rmd.retry import Abandoned, Backoff, Failure, Pacing, RetryPolicy, retry

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


# retry_until stopped because the caller no longer needs the result (the pod is gone).
ApiGaveUp = Abandoned


async def retry_until(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    give_up: Callable[[], bool],
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    pacing: Pacing | None = None,
) -> T:
    """Await ``call()`` until it succeeds; retry transient errors (equal jitter: between half
    and all of the exponential ceiling); raise others at once; raise :data:`ApiGaveUp` when
    ``give_up()`` turns true between attempts."""

    def report(failure: Failure) -> None:
        if failure.delay is None:
            return  # not transient: raised to the caller, who says what it means
        log.warning(
            "emulator_api_retry",
            what=what,
            status=status_of(failure.error),
            error=api_error_message(failure.error),
            failures=failure.attempt,
            retry_in=round(failure.delay, 2),
        )

    backoff = Backoff(base=base_delay, cap=max_delay, min_fraction=0.5)
    return await retry(
        call,
        policy=RetryPolicy(backoff=backoff),
        retriable=is_retriable,
        retry_after=retry_after_seconds,
        on_failure=report,
        abandon=give_up,
        pacing=pacing,
    )


class EmulatorApi:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        max_concurrent_writes: int = 8,
        timeouts: ApiTimeouts | None = None,
    ) -> None:
        self._api = api
        self._writes = asyncio.Semaphore(max_concurrent_writes)
        self.timeouts = timeouts or ApiTimeouts()

    @property
    def client(self) -> client.ApiClient:
        return self._api

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
