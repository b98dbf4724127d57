"""Start-up recovery, one call: read the stored state, list the pods, adopt — before any
request is served.

:func:`recover` reads ``rmd-state-<cluster-id>`` (:mod:`rmd.kube.statestore`), then LISTs the
TaskManager pods, then hands both to the engine (:meth:`rmd.driver.DaemonEngine.restore`,
:meth:`~rmd.driver.DaemonEngine.adopt`): the jobs come back with their declared slots, live
pods are adopted, and each one's slots go back to the jobs that held them when its agent
registers again (the agent registers again after its heartbeat gets 404). Until adoption,
``/v1`` answers 503.

- The API server unreachable (or 429, 5xx) while reading the state: retried for as long as
  it takes (backoff with full jitter) — without the state there is nothing sensible to do.
- The read refused (403: the service account may not read ConfigMaps; 401): logged as
  ``state_store_unavailable`` with the fix, and the daemon runs without keeping its state
  (as before rmd kept it: demand lives in memory, JobMasters declare again after a restart).
- A damaged state document: logged as ``state_unreadable`` naming the field; recovery goes on
  without it and the next write replaces it.
- The pod LIST failing for good (e.g. 403): logged; the pod watch's first LIST adopts
  instead (it keeps trying, and ``/readyz`` says why meanwhile).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from rmd.core.clock import Clock
from rmd.core.model import PodObservation
from rmd.core.recovery import StateFormatError, StateSnapshot
from rmd.driver import DaemonEngine
from rmd.kube.observe import observe_pod
from rmd.kube.pods import PodApiError, PodGateway
from rmd.kube.retry import KUBE_BACKOFF
from rmd.kube.statestore import ConfigMapStateStore, StateStoreError
from rmd.retry import Failure, Pacing, RetryPolicy, retry

log = structlog.get_logger(__name__)

T = TypeVar("T")

RECOVERY_RETRY = RetryPolicy(backoff=KUBE_BACKOFF)  # no limit: nothing to serve without it


async def recover(
    *,
    engine: DaemonEngine,
    store: ConfigMapStateStore,
    pods: PodGateway,
    label_selector: str,
    clock: Clock,
    pacing: Pacing | None = None,
    warm_view: Callable[[], Sequence[PodObservation] | None] | None = None,
) -> StateSnapshot | None:
    """Restore demand and assignments and adopt the pods. Returns the state read (empty when
    there was none), or None when the state cannot be kept (the store refuses access).

    ``warm_view``: a standby that has just become the leader (high availability) adopts the
    pods its running watch shows at this moment — no LIST, and no event is missed between a
    LIST and the adoption; None from it (no LIST seen yet) → a LIST, as at a plain start."""
    started = clock.monotonic()
    try:
        text = await _until_done(store.read, what="read the stored state", pacing=pacing)
    except StateStoreError as exc:
        log.error(
            "state_store_unavailable",
            error=str(exc),
            consequence="demand and assignments are not kept across restarts of rmd",
        )
        kept = False
        state = StateSnapshot()
    else:
        kept = True
        state = _decode(text, where=store.what)
        engine.restore(state)
    read_at = clock.monotonic()
    observed = None if warm_view is None else warm_view()
    from_warm_view = observed is not None
    if observed is None:
        try:
            observed, _ = await pods.list_converted(
                label_selector=label_selector, convert=observe_pod
            )
        except PodApiError as exc:
            log.error(
                "recovery_list_failed",
                error=str(exc),
                consequence="the pod watch adopts the pods once it can list them",
            )
            engine.adopt_from_watch()
            return state if kept else None
    engine.adopt(observed)
    log.info(
        "state_restored",
        configmap=store.what,
        jobs=len(state.jobs),
        slots_declared=state.slots_declared,
        slots_held=sum(job.held_count for job in state.jobs),
        pods_listed=len(observed),
        from_warm_view=from_warm_view,
        read_seconds=round(read_at - started, 3),
        seconds=round(clock.monotonic() - started, 3),
    )
    return state if kept else None


def _decode(text: str | None, *, where: str) -> StateSnapshot:
    if text is None:
        return StateSnapshot()
    try:
        return StateSnapshot.from_json(text)
    except StateFormatError as exc:
        log.error(
            "state_unreadable",
            configmap=where,
            error=str(exc),
            consequence="starting without stored demand: jobs come back when their "
            "JobMasters declare again; the next write replaces the damaged state",
        )
        return StateSnapshot()


async def _until_done(call: Callable[[], Awaitable[T]], *, what: str, pacing: Pacing | None) -> T:
    def transient(error: Exception) -> bool:
        return isinstance(error, StateStoreError) and error.transient

    def report(failure: Failure) -> None:
        log.warning(
            "recovery_retry" if failure.delay is not None else "recovery_failed",
            what=what,
            error=str(failure.error),
            attempt=failure.attempt,
            retry_in=None if failure.delay is None else round(failure.delay, 3),
        )

    return await retry(
        call, policy=RECOVERY_RETRY, retriable=transient, on_failure=report, pacing=pacing
    )
