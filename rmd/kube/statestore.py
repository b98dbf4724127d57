"""The ``rmd-state-<cluster-id>`` ConfigMap: where the daemon keeps what pods cannot tell.

One ConfigMap per cluster, labelled like the cluster's other objects
(``type=flink-native-kubernetes, app=<cluster-id>``) and owned by the JobManager Deployment
when there is one (deleting the cluster deletes it). Its key ``state.json`` holds
:class:`rmd.core.recovery.StateSnapshot` as JSON: every job's declared slots and the slots it
holds. One object, so one write stores a consistent state of all jobs.

Writes are whole-state replaces with the ``resourceVersion`` last read or written as a
precondition. A 409 (someone else changed it) reads the current version and applies our
state again (the latest state wins: it is a state, not a log); a 404 creates it; a create
that meets 409 reads and replaces. Transient errors (429, 5xx, lost connections) are
retried briefly with the one backoff (:mod:`rmd.kube.retry`); every call has a timeout.
The caller (:class:`rmd.statewriter.StateWriter`) retries failed writes with fresh state.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.core.recovery import StateSnapshot
from rmd.kube.podspec import LABEL_APP, LABEL_TYPE, LABEL_TYPE_NATIVE, OwnerReference
from rmd.kube.retry import (
    KUBE_BACKOFF,
    api_error_message,
    call_with_retries,
    is_retriable,
    status_of,
)
from rmd.retry import Abandoned, RetryPolicy

log = structlog.get_logger(__name__)

STATE_KEY = "state.json"
# The API server refuses a ConfigMap whose data exceeds 1 MiB (422 Too long). A state this
# large is refused here already (naming its size and why); from STATE_SIZE_WARNING on, each
# write that crosses it logs a warning. rmd_state_bytes shows the size of every write.
STATE_SIZE_LIMIT = 1024 * 1024
STATE_SIZE_WARNING = 900 * 1024
# One write rides out short blips; the state writer tries again (with the newest state).
STATE_CALL_RETRY = RetryPolicy(backoff=KUBE_BACKOFF, max_elapsed=3.0)
MAX_CONFLICT_ROUNDS = 5  # 409s in a row before a write is given up (and tried again later)


def state_config_map_name(cluster_id: str) -> str:
    return f"rmd-state-{cluster_id}"


class StateStoreError(RuntimeError):
    """The state could not be read or written; the message names the cause and the fix."""

    def __init__(self, message: str, *, status: int, transient: bool) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class ConfigMapStateStore:
    """Reads and writes the state ConfigMap of one cluster."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        cluster_id: str,
        owner: OwnerReference | None,
        timeout: float,
        retry: RetryPolicy = STATE_CALL_RETRY,
        on_api_error: Callable[[int], None] | None = None,
        may_write: Callable[[], bool] | None = None,
        field_manager: str | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> None:
        """``may_write``: asked before every create or replace (with high availability, "this
        daemon still holds the leader Lease"); when it says no, nothing is sent.
        ``field_manager``: sent with every create and replace (``metadata.managedFields``
        then names the daemon that wrote). ``on_size``: told the encoded size (bytes) of
        every state about to be written."""
        self._core = client.CoreV1Api(api)
        self._may_write = may_write
        # the stubs type field_manager as str: left out rather than None when not given
        self._field_manager: dict[str, Any] = (
            {} if field_manager is None else {"field_manager": field_manager}
        )
        self._namespace = namespace
        self._cluster_id = cluster_id
        self._owner = owner
        self._timeout = timeout
        self._retry = retry
        self._on_api_error = on_api_error
        self._resource_version: str | None = None  # None: not known to exist
        self._on_size = on_size
        self._near_limit = False  # the last write was at or above STATE_SIZE_WARNING
        self.name = state_config_map_name(cluster_id)

    @property
    def what(self) -> str:
        return f"configmap {self._namespace}/{self.name}"

    async def read(self) -> str | None:
        """The stored state document, or None when there is none (no ConfigMap or no key)."""
        try:
            current = await self._get()
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._error("read", exc) from exc
        if current is None:
            return None
        text = (current.data or {}).get(STATE_KEY)
        return text if isinstance(text, str) else None

    async def write(self, snapshot: StateSnapshot) -> None:
        """Store ``snapshot`` (replacing whatever is there). A state too large for a
        ConfigMap is not sent: :class:`StateStoreError` (not transient) names its size."""
        text = snapshot.to_json()
        self._check_size(len(STATE_KEY) + len(text.encode()), snapshot)
        data = {STATE_KEY: text}
        try:
            for _ in range(MAX_CONFLICT_ROUNDS):
                if self._resource_version is None and await self._get() is None:
                    if await self._create(data):
                        return
                    continue  # created by someone else meanwhile: read it
                if await self._replace(data):
                    return
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._error("write", exc) from exc
        except Abandoned as exc:
            raise StateStoreError(
                f"{self.what} not written: this daemon does not hold the leader Lease (any more)",
                status=0,
                transient=True,
            ) from exc
        raise StateStoreError(
            f"cannot write {self.what}: {MAX_CONFLICT_ROUNDS} attempts in a row lost to "
            "concurrent writers (another rmd daemon of this cluster?)",
            status=409,
            transient=True,
        )

    def _check_size(self, size: int, snapshot: StateSnapshot) -> None:
        if self._on_size is not None:
            self._on_size(size)
        near = size >= STATE_SIZE_WARNING
        if near and not self._near_limit:
            log.warning(
                "state_near_size_limit",
                configmap=self.name,
                bytes=size,
                limit=STATE_SIZE_LIMIT,
                jobs=len(snapshot.jobs),
                consequence="above the limit the state is no longer kept: declarations "
                "answer 503 not-stored; fewer jobs or larger TaskManagers keep it smaller",
            )
        self._near_limit = near
        if size > STATE_SIZE_LIMIT:
            raise StateStoreError(
                f"cannot write {self.what}: the state has {size} bytes, more than the "
                f"{STATE_SIZE_LIMIT} a ConfigMap may hold ({len(snapshot.jobs)} jobs); fewer "
                "jobs or TaskManagers with more slots (taskmanager.numberOfTaskSlots) make it "
                "smaller",
                status=0,
                transient=False,
            )

    # ------------------------------------------------------------------ calls

    async def _get(self) -> Any:
        """The ConfigMap (its resourceVersion remembered), or None if it does not exist."""
        try:
            current = await self._call(
                lambda: self._core.read_namespaced_config_map(
                    self.name, self._namespace, _request_timeout=self._timeout
                ),
                what=f"read {self.what}",
                expected=frozenset({404}),
            )
        except ApiException as exc:
            if exc.status == 404:
                self._resource_version = None
                return None
            raise
        self._resource_version = current.metadata.resource_version
        return current

    async def _create(self, data: dict[str, str]) -> bool:
        """False when someone else created it first (409)."""
        try:
            created = await self._call(
                functools.partial(
                    self._core.create_namespaced_config_map,
                    self._namespace,
                    body=cast(client.V1ConfigMap, self._manifest(data, resource_version=None)),
                    **self._field_manager,
                    _request_timeout=self._timeout,
                ),
                what=f"create {self.what}",
                expected=frozenset({409}),
                mutating=True,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._resource_version = created.metadata.resource_version
        return True

    async def _replace(self, data: dict[str, str]) -> bool:
        """False when the precondition failed (409: changed meanwhile) or it is gone (404):
        the caller reads again and re-applies."""
        try:
            replaced = await self._call(
                functools.partial(
                    self._core.replace_namespaced_config_map,
                    self.name,
                    self._namespace,
                    body=cast(
                        client.V1ConfigMap,
                        self._manifest(data, resource_version=self._resource_version),
                    ),
                    **self._field_manager,
                    _request_timeout=self._timeout,
                ),
                what=f"replace {self.what}",
                expected=frozenset({404, 409}),
                mutating=True,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                self._resource_version = None
                return False
            raise
        self._resource_version = replaced.metadata.resource_version
        return True

    async def _call(
        self,
        fn: Callable[[], Awaitable[Any]],
        *,
        what: str,
        expected: frozenset[int],
        mutating: bool = False,
    ) -> Any:
        """One call, transient errors retried; ``expected`` statuses are answers, not failures
        (the caller handles them), so they are not logged as failed calls. A ``mutating``
        call is not sent once ``may_write`` says no (:class:`rmd.retry.Abandoned`)."""
        may_write = self._may_write if mutating else None
        return await call_with_retries(
            fn,
            policy=self._retry,
            what=what,
            on_error=self._on_api_error,
            expected=expected,
            abandon=None if may_write is None else lambda: not may_write(),
        )

    def _manifest(self, data: dict[str, str], *, resource_version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self._namespace,
            "labels": {LABEL_TYPE: LABEL_TYPE_NATIVE, LABEL_APP: self._cluster_id},
        }
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        if self._owner is not None:
            metadata["ownerReferences"] = [self._owner.to_manifest()]
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}

    def _error(self, verb: str, exc: BaseException) -> StateStoreError:
        status = status_of(exc)
        if status == 403:
            fix = (
                "grant get, create and update on configmaps to the daemon's service account "
                "(conf/kubernetes/rbac.yaml)"
            )
        elif status:
            fix = "check the API server"
        else:
            fix = "the API server did not answer; check it and the kubeconfig"
        return StateStoreError(
            f"cannot {verb} {self.what} (HTTP {status}: {api_error_message(exc)}); {fix}",
            status=status,
            transient=is_retriable(exc),
        )
