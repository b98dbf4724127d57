"""Reading Flink's REST API: one GET with a timeout, JSON back or a :class:`FlinkRestError`.

Flink answers errors with JSON too (``{"errors": [...]}``), so every answer is decoded and
handed back with its status; only what is not an answer at all (no connection, a timeout, a
body that is not JSON) raises.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass

import aiohttp

__all__ = ["FailureReason", "FlinkRestClient", "FlinkRestError", "RestAnswer"]


class FailureReason(enum.StrEnum):
    """Why a read of Flink's REST API failed. Used as a metric label."""

    UNREACHABLE = "unreachable"  # no connection
    TIMEOUT = "timeout"
    HTTP_ERROR = "http-error"  # an answer, but not the one the endpoint gives when healthy
    MALFORMED = "malformed"  # not JSON, or JSON of the wrong shape


class FlinkRestError(Exception):
    def __init__(self, reason: FailureReason, path: str, detail: str) -> None:
        super().__init__(f"GET {path}: {detail}")
        self.reason = reason
        self.path = path
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RestAnswer:
    status: int
    body: object
    retry_after: float | None = None  # seconds, when the server sent Retry-After


_BODY_LIMIT = 200  # characters of a non-JSON body kept for the error message


class FlinkRestClient:
    """GETs against one JobManager's REST endpoint (``rmd.flink.rest-url``)."""

    def __init__(
        self, session: aiohttp.ClientSession, *, base_url: str, request_timeout: float
    ) -> None:
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 seconds (got {request_timeout})")
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)

    @property
    def base_url(self) -> str:
        return self._base_url

    async def get(self, path: str) -> RestAnswer:
        url = f"{self._base_url}{path}"
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                text = await response.text()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise FlinkRestError(
                FailureReason.TIMEOUT, path, f"no answer within {self._timeout.total:g} s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise FlinkRestError(
                FailureReason.UNREACHABLE, path, f"cannot reach {self._base_url} ({exc})"
            ) from exc
        try:
            body: object = json.loads(text)
        except ValueError as exc:
            raise FlinkRestError(
                FailureReason.MALFORMED,
                path,
                f"status {status} with a body that is not JSON: {text[:_BODY_LIMIT]!r}",
            ) from exc
        return RestAnswer(status=status, body=body, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to the backoff
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
