"""A blocking wrapper of :class:`~rmd.client.aio.RmdClient` for code without an event loop.

::

    with SyncRmdClient("http://localhost:8090") as rmd:
        rmd.declare("job-1", 4)
        view = rmd.wait_fulfilled("job-1", timeout=60)

It runs its own event loop (``asyncio.Runner``); do not call it from inside a running loop.
"""

from __future__ import annotations

import asyncio
import random
from types import TracebackType

from rmd.client.aio import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_REQUEST_TIMEOUT,
    RmdClient,
)
from rmd.client.views import JobView

__all__ = ["SyncRmdClient"]


class SyncRmdClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        rng: random.Random | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        self._client = RmdClient(
            base_url,
            token=token,
            request_timeout=request_timeout,
            max_attempts=max_attempts,
            max_retry_wait=max_retry_wait,
            rng=rng,
        )

    def __enter__(self) -> SyncRmdClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.close()

    def declare(self, job_id: str, slots: int) -> JobView:
        return self._runner.run(self._client.declare(job_id, slots))

    def job(self, job_id: str, *, wait: float | None = None) -> JobView:
        return self._runner.run(self._client.job(job_id, wait=wait))

    def wait_fulfilled(self, job_id: str, *, timeout: float) -> JobView:
        return self._runner.run(self._client.wait_fulfilled(job_id, timeout=timeout))

    def release(self, job_id: str) -> None:
        self._runner.run(self._client.release(job_id))

    def jobs(self) -> list[JobView]:
        return self._runner.run(self._client.jobs())
