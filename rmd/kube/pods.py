"""Creating, deleting and listing TaskManager pods: idempotent, bounded, retried, timed out.

While the API server cannot be reached or answers 429/5xx, a delete or a list is retried for
up to ``KUBE_CALL_RETRY.max_elapsed`` (30 s) — long enough to ride out an API server restart
or an etcd leader election — and a create for ``KUBE_CREATE_MAX_ELAPSED`` (3 s); then
the call fails with ``api_unavailable=True``: the API was down, the pod itself was never
judged. The allocator sends such a create again itself, and says why the job waits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Self, TypeVar, cast

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.kube.listwatch import (
    Json,
    ResourceQuery,
    call_discarding_answer,
    call_json,
    list_converted,
    whole_object,
)
from rmd.kube.priorityslots import Priority, PrioritySlots
from rmd.kube.retry import (
    ADMISSION_DENIED,
    KUBE_CALL_RETRY,
    KUBE_CREATE_MAX_ELAPSED,
    RequestObserver,
    api_error_message,
    api_error_reason,
    call_with_retries,
    is_retriable,
    request_result,
    status_of,
)
from rmd.kube.writehealth import WriteHealth
from rmd.retry import Abandoned, Pacing, RetryPolicy

log = structlog.get_logger(__name__)
T = TypeVar("T")


class PodApiError(Exception):
    """A pod operation failed for good (after any retries).

    ``reason``: short machine-readable cause (``Forbidden``, ``QuotaExceeded``, ``Invalid``,
    ``AlreadyExists``, ``TooManyRequests``, ``ConnectionError``, ...); ``message``: the API
    server's own message, unchanged; ``retriable``: the cause was transient (the same call
    may succeed later) rather than a problem a person must fix; ``status``: HTTP status, 0
    for connection errors; ``api_unavailable``: the API server itself failed (no connection,
    timeout, 429, 5xx, still so after the retries) — nothing was learnt about the pod, so a
    create that failed this way is no start failure of the TaskManager.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retriable: bool,
        status: int = 0,
        api_unavailable: bool = False,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retriable = retriable
        self.status = status
        self.api_unavailable = api_unavailable

    @property
    def pod_not_judged(self) -> bool:
        """Nothing was learnt about the pod: the API server was unavailable, or it refused
        the daemon (401 credentials, 403 RBAC or an exhausted ResourceQuota) — a person
        fixes that, the pod is not at fault. The same create is sent again with backoff
        meanwhile (1 s growing to 10 s: no hot loop), never counted as a start failure, so
        creates resume within seconds of the fix instead of after the start-failure
        limiter's minute. A 403 of admission (``AdmissionDenied``: LimitRanger, pod
        security, a webhook) judged the pod itself: like a 422, a start failure, so the
        start-failure limit paces the next tries."""
        if self.api_unavailable or self.status == 401:
            return True
        return self.status == 403 and self.reason != ADMISSION_DENIED

    @classmethod
    def from_exception(cls, exc: BaseException) -> Self:
        transient = is_retriable(exc)
        return cls(
            api_error_reason(exc),
            api_error_message(exc),
            retriable=transient,
            status=status_of(exc),
            api_unavailable=transient,
        )


class NotLeaderError(PodApiError):
    """The daemon is not (or no longer) the leader: the call was not sent."""

    def __init__(self, what: str) -> None:
        super().__init__(
            "NotLeader",
            f"{what} not sent: this daemon does not hold the leader Lease (any more)",
            retriable=True,
            api_unavailable=True,
        )


class PodCreateError(PodApiError):
    """Creating a pod failed."""


class PodDeleteError(PodApiError):
    """Deleting a pod failed."""


class PodListError(PodApiError):
    """Listing pods failed."""


class PodPatchError(PodApiError):
    """Patching a pod's labels failed."""


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
        retry: RetryPolicy = KUBE_CALL_RETRY,
        create_max_elapsed: float = KUBE_CREATE_MAX_ELAPSED,
        on_api_error: Callable[[int], None] | None = None,
        on_request: RequestObserver | None = None,
        pacing: Pacing | None = None,
        may_write: Callable[[], bool] | None = None,
        write_health: WriteHealth | None = None,
        field_manager: str | None = None,
    ) -> None:
        """``may_write``: asked right before every create or delete attempt (with high
        availability, "this daemon still holds the leader Lease"); when it says no, the call
        is not sent and :class:`NotLeaderError` is raised. ``field_manager``: sent with every
        create and patch, so the API server records in ``metadata.managedFields`` which
        daemon wrote the pod (:func:`rmd.kube.lease.field_manager_name`)."""
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self._api = api
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        # creates and deletes before label patches, both before Events (which share it)
        self._slots = PrioritySlots(max_parallel)
        self._request_timeout = request_timeout
        self._retry = retry
        # the same retries, within a shorter time: the allocator re-sends a create itself
        self._create_retry = replace(
            retry,
            max_elapsed=min(
                create_max_elapsed,
                create_max_elapsed if retry.max_elapsed is None else retry.max_elapsed,
            ),
        )
        self._on_api_error = on_api_error
        self._on_request = on_request
        self._pacing = pacing
        self._may_write = may_write
        self._write_health = write_health
        # the raw calls' query: left out rather than empty when not given
        self._field_manager_params = (
            [] if field_manager is None else [("fieldManager", field_manager)]
        )
        self._pods_path = f"/api/v1/namespaces/{namespace}/pods"

    @property
    def slots(self) -> PrioritySlots:
        """The limit toward the API server (``rmd.kubernetes.max-parallel-requests``): other
        writers (the Event recorder) take their turn in it at a lower priority."""
        return self._slots

    @property
    def namespace(self) -> str:
        return self._namespace

    async def create(self, body: dict[str, Any]) -> str | None:
        """Create the pod ``body``; its uid. A 409 for a pod of the same name that carries
        all of ``body``'s labels counts as done (an earlier attempt of ours got through).

        Raises :class:`PodCreateError` otherwise.
        """
        metadata = _mapping(body.get("metadata"))
        name = str(metadata.get("name") or "")
        if not name:
            raise ValueError("the pod body needs metadata.name (rmd names its pods itself)")
        labels = {str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()}

        async def post() -> Json:
            # The answer as a dict (only its uid is read): building a V1Pod model from it
            # (dateutil parsing every timestamp) was half the daemon's CPU of a create.
            return await self._observed_write(
                call_json(
                    self._api,
                    "POST",
                    self._pods_path,
                    params=self._field_manager_params,
                    body=body,
                    timeout=(self._request_timeout, self._request_timeout),
                )
            )

        async with self._slots.slot(Priority.WRITE):
            try:
                created = await self._with_retries(
                    post,
                    verb="create",
                    what=f"create pod {name}",
                    policy=self._create_retry,
                    mutating=True,
                )
            except Abandoned as exc:
                raise NotLeaderError(f"create pod {name}") from exc
            except ApiException as exc:
                if exc.status == 409:
                    return await self._accept_existing(name, labels=labels, conflict=exc)
                raise PodCreateError.from_exception(exc) from exc
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise PodCreateError.from_exception(exc) from exc
        log.debug("pod_created", pod=name, namespace=self._namespace)
        return _uid_of(created)

    async def patch_labels(self, name: str, labels: Mapping[str, str]) -> bool:
        """Merge-patch ``labels`` into the pod's ``metadata.labels``; False when the pod is
        gone (404) or this daemon no longer leads. Retried within the create's short limit
        only (it holds a slot of the gateway meanwhile); the caller retries later itself.

        Raises :class:`PodPatchError` otherwise.
        """
        body = {"metadata": {"labels": dict(labels)}}
        path = f"{self._pods_path}/{name}"

        async def send() -> None:
            # The answer (the whole pod) is not used: not turned into a V1Pod either.
            await call_discarding_answer(
                self._api,
                "PATCH",
                path,
                params=self._field_manager_params,
                body=body,
                content_type="application/merge-patch+json",
                timeout=(self._request_timeout, self._request_timeout),
            )

        async with self._slots.slot(Priority.LABEL):
            try:
                await self._with_retries(
                    send,
                    verb="patch",
                    what=f"label pod {name}",
                    policy=self._create_retry,
                    mutating=True,
                )
            except Abandoned:
                return False  # a deposed leader labels nothing more (it is on its way out)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise PodPatchError.from_exception(exc) from exc
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise PodPatchError.from_exception(exc) from exc
        return True

    async def delete(self, name: str, *, grace_period_seconds: int | None = None) -> None:
        """Delete the pod ``name``; a pod that is already gone (404) counts as deleted.

        Raises :class:`PodDeleteError` otherwise.
        """

        async def send() -> None:
            if grace_period_seconds is None:
                call = self._core.delete_namespaced_pod(
                    name, self._namespace, _request_timeout=self._request_timeout
                )
            else:
                call = self._core.delete_namespaced_pod(
                    name,
                    self._namespace,
                    grace_period_seconds=grace_period_seconds,
                    _request_timeout=self._request_timeout,
                )
            await self._observed_write(call)

        async with self._slots.slot(Priority.WRITE):
            try:
                await self._with_retries(
                    send, verb="delete", what=f"delete pod {name}", mutating=True
                )
            except Abandoned as exc:
                raise NotLeaderError(f"delete pod {name}") from exc
            except ApiException as exc:
                if exc.status == 404:
                    log.debug("pod_already_gone", pod=name, namespace=self._namespace)
                    return
                raise PodDeleteError.from_exception(exc) from exc
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise PodDeleteError.from_exception(exc) from exc
        log.debug("pod_deleted", pod=name, namespace=self._namespace)

    async def _observed_write(self, call: Awaitable[T]) -> T:
        """Await one write attempt, telling the write health how it ended."""
        health = self._write_health
        if health is None:
            return await call
        token = health.sent()
        try:
            answer = await call
        except ApiException:
            health.answered(token)
            raise
        except TimeoutError:
            health.timed_out(token)
            raise
        except BaseException:
            health.failed(token)
            raise
        health.answered(token)
        return answer

    async def list_converted(
        self, *, label_selector: str, convert: Callable[[Json], T]
    ) -> tuple[list[T], str]:
        """All pods matching ``label_selector``, each turned into ``convert``'s record as its
        page is read (the raw pages are not held all at once:
        :func:`rmd.kube.listwatch.list_converted`), and the list's resourceVersion.

        Paged; a failed page is retried by listing again from the start (one consistent
        list). Raises :class:`PodListError` when it fails for good.
        """
        query = ResourceQuery(namespace=self._namespace, label_selector=label_selector)

        async def fetch() -> tuple[list[T], str]:
            timeout = (self._request_timeout, self._request_timeout)
            return await list_converted(self._api, query, convert=convert, timeout=timeout)

        try:
            listed: tuple[list[T], str] = await self._with_retries(
                fetch, verb="list", what="list pods"
            )
        except (ApiException, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise PodListError.from_exception(exc) from exc
        return listed

    async def list(self, *, label_selector: str) -> tuple[list[Json], str]:
        """:meth:`list_converted` keeping each pod's raw JSON (without managedFields)."""
        return await self.list_converted(label_selector=label_selector, convert=whole_object)

    async def _accept_existing(
        self, name: str, *, labels: Mapping[str, str], conflict: ApiException
    ) -> str | None:
        async def read() -> Json:
            return await call_json(
                self._api,
                "GET",
                f"{self._pods_path}/{name}",
                timeout=(self._request_timeout, self._request_timeout),
            )

        try:
            existing = await self._with_retries(read, verb="get", what=f"read pod {name}")
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
        found = _mapping(_mapping(existing.get("metadata")).get("labels"))
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
        return _uid_of(existing)

    async def _with_retries(
        self,
        fn: Callable[[], Awaitable[Any]],
        *,
        verb: str,
        what: str,
        policy: RetryPolicy | None = None,
        mutating: bool = False,
    ) -> Any:
        may_write = self._may_write if mutating else None
        observe = self._on_request

        async def timed() -> Any:
            if observe is None:
                return await fn()
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                answer = await fn()
            except BaseException as error:
                if not isinstance(error, asyncio.CancelledError):
                    observe(verb, request_result(error), loop.time() - started)
                raise
            observe(verb, "success", loop.time() - started)
            return answer

        return await call_with_retries(
            timed,
            policy=self._retry if policy is None else policy,
            what=what,
            on_error=self._on_api_error,
            pacing=self._pacing,
            abandon=None if may_write is None else lambda: not may_write(),
        )


def _uid_of(pod: Json) -> str | None:
    uid = _mapping(pod.get("metadata")).get("uid")
    return uid if isinstance(uid, str) and uid else None


def _mapping(value: object) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], value) if isinstance(value, Mapping) else {}
