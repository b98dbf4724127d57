"""The port the HTTP API needs from the daemon (:class:`Engine`): the allocator, an outlet for
its actions, waiting.

The daemon implements it (:class:`rmd.driver.DaemonEngine`); unit tests use an in-memory one
with the real allocator.
Handlers call the allocator synchronously and hand its actions to :meth:`Engine.apply` with no
``await`` in between, so no other request or event can interleave.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from rmd.core.allocator import Allocator
from rmd.core.model import Action

__all__ = ["Engine"]


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
