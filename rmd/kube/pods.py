"""Creating, deleting and listing TaskManager pods: idempotent, bounded, retried, timed out."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client import V1Pod, V1PodList
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.kube.retry import (
    RetryPolicy,
    api_error_message,
    api_error_reason,
    call_with_retries,
    is_retriable,
    status_of,
)

log = structlog.get_logger(__name__)

LIST_PAGE_SIZE = 500


class PodApiError(Exception):
    """A pod operation failed for good (after any retries).

    ``reason``: short machine-readable cause (``Forbidden``, ``QuotaExceeded``, ``Invalid``,
    ``AlreadyExists``, ``TooManyRequests``, ``ConnectionError``, ...); ``message``: the API
    server's own message, unchanged; ``retriable``: the cause was transient (the same call
    may succeed later) rather than a problem a person must fix; ``status``: HTTP status, 0
    for connection errors.
    """

    def __init__(self, reason: str, message: str, *, retriable: bool, status: int = 0) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retriable = retriable
        self.status = status

    @classmethod
    def from_exception(cls, exc: BaseException) -> PodApiError:
        return cls(
            api_error_reason(exc),
            api_error_message(exc),
            retriable=is_retriable(exc),
            status=status_of(exc),
        )


class PodCreateError(PodApiError):
    """Creating a pod failed."""


class PodDeleteError(PodApiError):
    """Deleting a pod failed."""


class PodListError(PodApiError):
    """Listing pods failed."""


class PodGateway:
    """The daemon's only way to change pods. Every call has a timeout; create and delete
    together run at most ``max_parallel`` at a time (retries included, so a throttled API
    server sees back-pressure rather than more calls)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        max_parallel: int = 8,
        request_timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
        on_api_error: Callable[[int], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._slots = asyncio.Semaphore(max_parallel)
        self._request_timeout = request_timeout
        self._retry = retry
        self._on_api_error = on_api_error
        self._sleep = sleep
        self._rng = rng

    @property
    def namespace(self) -> str:
        return self._namespace

    async def create(self, body: dict[str, Any]) -> None:
        """Create the pod ``body``. A 409 for a pod of the same name that carries all of
        ``body``'s labels counts as done (an earlier attempt of ours got through).

        Raises :class:`PodCreateError` otherwise.
        """
        metadata = _mapping(body.get("metadata"))
        name = str(metadata.get("name") or "")
        if not name:
            raise ValueError("the pod body needs metadata.name (rmd names its pods itself)")
        labels = {str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()}

        async def post() -> None:
            await self._core.create_namespaced_pod(
                self._namespace, cast(V1Pod, body), _request_timeout=self._request_timeout
            )

        async with self._slots:
            try:
                await self._with_retries(post, what=f"create pod {name}")
            except ApiException as exc:
                if exc.status == 409:
                    await self._accept_existing(name, labels=labels, conflict=exc)
                    return
                raise PodCreateError.from_exception(exc) from exc
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise PodCreateError.from_exception(exc) from exc
        log.debug("pod_created", pod=name, namespace=self._namespace)

    async def delete(self, name: str, *, grace_period_seconds: int | None = None) -> None:
        """Delete the pod ``name``; a pod that is already gone (404) counts as deleted.

        Raises :class:`PodDeleteError` otherwise.
        """

        async def send() -> None:
            if grace_period_seconds is None:
                await self._core.delete_namespaced_pod(
                    name, self._namespace, _request_timeout=self._request_timeout
                )
            else:
                await self._core.delete_namespaced_pod(
                    name,
                    self._namespace,
                    grace_period_seconds=grace_period_seconds,
                    _request_timeout=self._request_timeout,
                )

        async with self._slots:
            try:
                await self._with_retries(send, what=f"delete pod {name}")
            except ApiException as exc:
                if exc.status == 404:
                    log.debug("pod_already_gone", pod=name, namespace=self._namespace)
                    return
                raise PodDeleteError.from_exception(exc) from exc
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise PodDeleteError.from_exception(exc) from exc
        log.debug("pod_deleted", pod=name, namespace=self._namespace)

    async def list(self, *, label_selector: str) -> tuple[list[V1Pod], str]:
        """All pods matching ``label_selector`` and the list's resourceVersion (paged).

        Raises :class:`PodListError` when it fails for good.
        """
        pods: list[V1Pod] = []
        resource_version = ""
        continue_token: str | None = None
        while True:
            token = continue_token

            async def fetch(token: str | None = token) -> V1PodList:
                if token:
                    return await self._core.list_namespaced_pod(
                        self._namespace,
                        label_selector=label_selector,
                        limit=LIST_PAGE_SIZE,
                        _continue=token,
                        _request_timeout=self._request_timeout,
                    )
                return await self._core.list_namespaced_pod(
                    self._namespace,
                    label_selector=label_selector,
                    limit=LIST_PAGE_SIZE,
                    _request_timeout=self._request_timeout,
                )

            try:
                page = await self._with_retries(fetch, what="list pods")
            except ApiException as exc:
                if exc.status == 410 and token:
                    # The continue token expired mid-way: start over for a consistent list.
                    pods, resource_version, continue_token = [], "", None
                    continue
                raise PodListError.from_exception(exc) from exc
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise PodListError.from_exception(exc) from exc
            pods.extend(page.items or [])
            if not resource_version:
                resource_version = str(page.metadata.resource_version or "")
            continue_token = page.metadata._continue or None
            if not continue_token:
                return pods, resource_version

    async def _accept_existing(
        self, name: str, *, labels: Mapping[str, str], conflict: ApiException
    ) -> None:
        async def read() -> V1Pod:
            return await self._core.read_namespaced_pod(
                name, self._namespace, _request_timeout=self._request_timeout
            )

        try:
            existing = await self._with_retries(read, what=f"read pod {name}")
        except ApiException as exc:
            if exc.status == 404:
                raise PodCreateError(
                    "AlreadyExists",
                    f"pod {name} existed a moment ago and is gone now: "
                    + api_error_message(conflict),
                    retriable=True,
                    status=409,
                ) from exc
            raise PodCreateError.from_exception(exc) from exc
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise PodCreateError.from_exception(exc) from exc
        found = existing.metadata.labels or {}
        missing = {k: v for k, v in labels.items() if found.get(k) != v}
        if missing:
            raise PodCreateError(
                "AlreadyExists",
                f"a pod named {name} exists but is not ours (labels differ: expected "
                f"{json.dumps(missing, sort_keys=True)}): " + api_error_message(conflict),
                retriable=False,
                status=409,
            )
        log.info("pod_create_already_done", pod=name, namespace=self._namespace)

    async def _with_retries(self, fn: Callable[[], Any], *, what: str) -> Any:
        return await call_with_retries(
            fn,
            policy=self._retry,
            what=what,
            sleep=self._sleep,
            on_error=self._on_api_error,
            rng=self._rng,
        )


def _mapping(value: object) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], value) if isinstance(value, Mapping) else {}


async def list_pods_raw(
    api: client.ApiClient,
    *,
    namespace: str,
    label_selector: str,
    request_timeout: float | tuple[float, float],
    page_size: int = LIST_PAGE_SIZE,
) -> tuple[list[dict[str, Any]], str]:
    """List pods as plain JSON dicts (no model deserialization: cheap for thousands of pods).

    Paged; a continue token that expires mid-way restarts the list. Errors raise
    ``ApiException`` (with status, body and headers) or aiohttp/timeout errors; no retries
    here: the caller owns the policy.
    """
    core = client.CoreV1Api(api)
    while True:
        items: list[dict[str, Any]] = []
        resource_version = ""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": label_selector, "limit": page_size}
            if token:
                kwargs["_continue"] = token
            try:
                page = await _get_json(
                    core.list_namespaced_pod(
                        namespace,
                        _preload_content=False,
                        _request_timeout=request_timeout,
                        **kwargs,
                    )
                )
            except ApiException as exc:
                if exc.status == 410 and token:
                    break  # continue token expired: the outer loop starts over
                raise
            items.extend(item for item in page.get("items") or [] if isinstance(item, dict))
            meta = _mapping(page.get("metadata"))
            if not resource_version:
                resource_version = str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "") or None
            if not token:
                return items, resource_version


async def _get_json(pending: Any) -> dict[str, Any]:
    """Await a ``_preload_content=False`` call; raise ``ApiException`` for a non-2xx answer."""
    response = cast(aiohttp.ClientResponse, await pending)
    try:
        data = await response.read()
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = data
            error.headers = response.headers
            raise error
        parsed = json.loads(data)
    finally:
        response.release()
    if not isinstance(parsed, dict):
        raise ApiException(status=0, reason="the API server answered a list with a non-object")
    return parsed
