"""The port the HTTP API needs from the daemon (:class:`Engine`): the allocator, an outlet for
its actions, waiting.

The daemon implements it (:class:`rmd.driver.DaemonEngine`); unit tests use an in-memory one
with the real allocator.
Handlers call the allocator synchronously and hand its actions to :meth:`Engine.apply` with no
``await`` in between, so no other request or event can interleave.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeAlias

from rmd.core.allocator import Allocator
from rmd.core.model import Action

__all__ = ["Engine", "Leadership", "StateStored"]

# Waits until the state as it is now (demand, assignments) is stored in the API server, so
# it survives a restart; False when that could not be done in time (API server unreachable).
StateStored: TypeAlias = Callable[[], Awaitable[bool]]


class Engine(Protocol):
    @property
    def allocator(self) -> Allocator:
        """The one allocation state machine; call it only from the event loop's thread."""
        ...

    def apply(self, actions: Sequence[Action]) -> None:
        """Carry out the effects (pod creates/deletes) and record the notices (logs, metrics)."""
        ...

    async def wait_for_job(
        self,
        job_id: str,
        predicate: Callable[[], bool],
        *,
        timeout: float,
    ) -> bool:
        """Return True as soon as ``predicate()`` holds (re-checked whenever the job's
        requirement or slots change, :meth:`Allocator.job_version`), False when ``timeout``
        seconds pass first."""
        ...

    @property
    def ready(self) -> bool:
        """True once the pod watch has synced and the daemon serves requests."""
        ...

    @property
    def adopted(self) -> bool:
        """True once the first pod list has been adopted (start-up recovery is over); stays
        true while the watch reconnects later, so /v1 — heartbeats above all — is served
        through an API server outage."""
        ...


class Leadership(Protocol):
    """With high availability: whether this daemon leads, and where the leader answers."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader_url(self) -> str | None:
        """The leader's base URL (``http://<pod IP>:<port>``); None when none is known."""
        ...
