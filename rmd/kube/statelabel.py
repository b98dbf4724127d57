"""The ``rmd.dev/state`` label on each TaskManager pod: rmd's view, for ``kubectl get pods -L``.

Values: ``pending`` (the pod exists, its TaskManager has not registered), ``registered`` (it
holds at least one allocated slot), ``idle`` (registered, no slot allocated), ``releasing``
(rmd is deleting the pod). A ``requested`` TaskManager has no pod yet: its create carries
``pending`` already, so a pod that goes straight on costs no patch for its first state.

One label write per change at most: the labeler keeps, per pod, the value it wants and the
value last written; a change superseded before its patch went out is never sent (one worker
per pod sends the latest wanted value). Patches go through the pod gateway (its concurrency
limit, its timeouts), are retried with backoff and jitter while wanted, and are never sent to
a pod rmd is deleting or that is gone. Nothing waits for them: allocation never does.

The label is not in the watch's label selector (``type``, ``app``, ``component``): writing it
changes nothing in what the daemon sees but the pod's resourceVersion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from rmd.core.model import TaskManagerState, TaskManagerView
from rmd.kube.keyedworkers import KeyedWorkers
from rmd.kube.pods import PodApiError
from rmd.retry import Abandoned, Backoff, Failure, Pacing, RetryPolicy, retry

log = structlog.get_logger(__name__)

# A DNS subdomain prefix the project's own annotations use already (emulator.rmd.dev/...):
# labels an automated component adds to users' objects must carry a prefix (Kubernetes'
# label rules), and flink.apache.org or kubernetes.io are not ours to write under.
STATE_LABEL = "rmd.dev/state"
PENDING = "pending"
REGISTERED = "registered"
IDLE = "idle"
RELEASING = "releasing"
# How long a delete waits for its pod's "releasing" label before it goes out anyway.
RELEASING_LABEL_WAIT = 2.0
LABEL_RETRY = RetryPolicy(backoff=Backoff(base=1.0, cap=60.0))

PatchLabels = Callable[[str, Mapping[str, str]], Awaitable[bool]]


def state_label_value(view: TaskManagerView) -> str | None:
    """The label a TaskManager's pod should carry; None before the pod exists."""
    match view.state:
        case TaskManagerState.REQUESTED:
            return None
        case TaskManagerState.PENDING:
            return PENDING
        case TaskManagerState.REGISTERED:
            return REGISTERED if view.slots_allocated else IDLE
        case TaskManagerState.RELEASING:
            return RELEASING


def with_initial_state(body: dict[str, Any]) -> dict[str, Any]:
    """The pod manifest with ``rmd.dev/state: pending`` among its labels."""
    metadata = body.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), STATE_LABEL: PENDING}
    return body


class PodStateLabeler:
    def __init__(
        self,
        *,
        patch_labels: PatchLabels,
        policy: RetryPolicy = LABEL_RETRY,
        pacing: Pacing | None = None,
        on_patch: Callable[[str], None] | None = None,
    ) -> None:
        self._patch_labels = patch_labels
        self._policy = policy
        self._pacing = pacing
        self._on_patch = on_patch or (lambda _result: None)
        self._wanted: dict[str, str] = {}
        self._written: dict[str, str] = {}
        self._deleting: set[str] = set()
        self._workers: KeyedWorkers[str] = KeyedWorkers(name="label")

    def created(self, name: str) -> None:
        """The pod was created from a manifest of :func:`with_initial_state`."""
        self._written[name] = PENDING
        self._wanted.setdefault(name, PENDING)

    def observed(self, name: str, value: str | None) -> None:
        """The pod as the watch or a LIST shows it carries ``value``: what is written, when
        nothing newer is known (the watch can show a new pod before its create answers)."""
        if value is not None:
            self._written.setdefault(name, value)

    def want(self, name: str, value: str | None) -> None:
        """The label ``name`` should carry now (None: no pod yet, nothing to write)."""
        if value is None or name in self._deleting:
            return
        self._wanted[name] = value
        if self._written.get(name) != value:
            self._workers.start(name, lambda: self._send(name))

    def forget(self, name: str) -> None:
        """The TaskManager is gone: nothing more is written to its pod."""
        self._deleting.discard(name)
        self._wanted.pop(name, None)
        self._written.pop(name, None)
        self._workers.cancel(name)

    def pod_deleting(self, name: str) -> None:
        """Someone deletes the pod (its deletionTimestamp is set): no more patches."""
        self._deleting.add(name)

    async def before_delete(self, name: str) -> None:
        """rmd is about to delete the pod: label it ``releasing`` (waiting a moment at most),
        then write nothing more to it."""
        if name not in self._wanted or name in self._deleting:
            return  # not a TaskManager's pod (an orphan), or labelled for the last time
        self.want(name, RELEASING)
        worker = self._workers.task(name)
        if worker is not None:
            # asyncio.wait neither raises the worker's outcome nor cancels it on timeout.
            await asyncio.wait({worker}, timeout=RELEASING_LABEL_WAIT)
        self._deleting.add(name)

    def written(self, name: str) -> str | None:
        """The value last written to the pod."""
        return self._written.get(name)

    def sending(self, name: str) -> bool:
        """A patch of the pod's label is on its way (or waits for a retry)."""
        return self._workers.running(name)

    async def close(self) -> None:
        await self._workers.close()

    # ------------------------------------------------------------------ internals
    async def _send(self, name: str) -> None:
        """Write the latest wanted value until it is the one written."""
        while (value := self._wanted.get(name)) is not None and self._written.get(name) != value:
            if name in self._deleting:
                return

            def superseded(value: str = value) -> bool:
                return self._wanted.get(name) != value or name in self._deleting

            def report(failure: Failure, value: str = value) -> None:
                error = failure.error
                self._on_patch("failed")
                giving_up = failure.delay is None  # not retriable: a person must act (RBAC)
                (log.warning if giving_up else log.info)(
                    "pod_label_failed",
                    pod=name,
                    label=f"{STATE_LABEL}={value}",
                    status=error.status if isinstance(error, PodApiError) else None,
                    message=error.message if isinstance(error, PodApiError) else repr(error),
                    retry_in=None if failure.delay is None else round(failure.delay, 3),
                )

            def attempt(value: str = value) -> Awaitable[bool]:
                return self._patch_labels(name, {STATE_LABEL: value})

            try:
                exists = await retry(
                    attempt,
                    policy=self._policy,
                    retriable=_retriable,
                    on_failure=report,
                    abandon=superseded,
                    pacing=self._pacing,
                )
            except Abandoned:
                continue  # a newer value (or a delete) came first: look again
            except Exception:  # not retriable (e.g. 403): reported above; the next change tries
                return
            if not exists:
                self._on_patch("gone")
                self._deleting.add(name)
                return
            self._on_patch("written")
            self._written[name] = value
            log.debug("pod_labelled", pod=name, label=f"{STATE_LABEL}={value}")


def _retriable(error: Exception) -> bool:
    return not isinstance(error, PodApiError) or error.retriable
