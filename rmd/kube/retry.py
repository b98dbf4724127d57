"""Retrying Kubernetes API calls: which errors are worth another try, and how long to wait.

kubernetes_asyncio has no retries of its own. :func:`call_with_retries` retries what is
transient (429, 5xx, dropped connections, timeouts) with exponential backoff and full jitter,
honours ``Retry-After`` (429, 503, and the 500s that carry one, e.g. ServerTimeout), and
raises every other error at once with a log line that says what to fix (RBAC, quota,
invalid spec).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import structlog
from kubernetes_asyncio.client.exceptions import ApiException

T = TypeVar("T")

log = structlog.get_logger(__name__)

CONNECTION_ERROR_STATUS = 0  # what on_error receives for errors without an HTTP status


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently to retry a transient API error."""

    attempts: int = 6  # total tries, the first one included
    base_delay: float = 0.2  # seconds; the n-th retry waits up to base_delay * 2**(n-1)
    max_delay: float = 10.0  # cap of one computed backoff delay
    max_retry_after: float = 60.0  # cap of a server's Retry-After

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("RetryPolicy delays must not be negative")


def backoff_delay(
    retry_number: int,
    *,
    base_delay: float,
    max_delay: float,
    rng: random.Random,
    min_fraction: float = 0.0,
) -> float:
    """Exponential backoff with jitter: uniform in [min_fraction * ceiling, ceiling], where
    ceiling = min(max, base * 2**(n-1)). ``min_fraction`` 0 is full jitter, 0.5 equal jitter.

    ``retry_number`` counts from 1 (the first retry).
    """
    exponent = max(retry_number - 1, 0)
    ceiling = min(max_delay, base_delay * (2.0 ** min(exponent, 62)))
    return rng.uniform(min_fraction * ceiling, ceiling)


def status_of(exc: BaseException) -> int:
    """The HTTP status of an API error; 0 for connection errors, timeouts and the like."""
    if isinstance(exc, ApiException):
        return int(exc.status or 0)
    return CONNECTION_ERROR_STATUS


def is_retriable(exc: BaseException) -> bool:
    """True for errors that another identical request may not meet: 429, 5xx, lost connections."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status == 429 or 500 <= status <= 599
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return False  # the CA does not match: retrying cannot help
    return isinstance(
        exc,
        aiohttp.ClientConnectionError
        | aiohttp.ClientPayloadError
        | asyncio.TimeoutError
        | ConnectionError,
    )


def api_status_body(exc: ApiException) -> Mapping[str, Any]:
    """The Kubernetes ``Status`` object of an API error, or ``{}`` if it carries none."""
    body = exc.body
    if not body:
        return {}
    try:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def api_error_message(exc: BaseException) -> str:
    """The API server's own words for an error (its ``Status.message``), unchanged."""
    if isinstance(exc, ApiException):
        message = api_status_body(exc).get("message")
        if isinstance(message, str) and message:
            return message
        if exc.body:
            body = exc.body
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
            if text.strip():
                return text.strip()
        return str(exc.reason or f"HTTP {exc.status}")
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def api_error_reason(exc: BaseException) -> str:
    """A short machine-readable reason: the Status reason (Forbidden, Invalid, ...),
    ``QuotaExceeded`` for ResourceQuota denials, ``ConnectionError``/``Timeout`` otherwise."""
    if isinstance(exc, ApiException):
        if exc.status == 403 and "exceeded quota" in api_error_message(exc):
            return "QuotaExceeded"
        reason = api_status_body(exc).get("reason")
        if isinstance(reason, str) and reason:
            return reason
        if exc.reason:
            return str(exc.reason).split(":", 1)[0].replace(" ", "")
        return f"HTTP{exc.status}"
    if isinstance(exc, asyncio.TimeoutError):
        return "Timeout"
    return "ConnectionError"


def explain_api_error(exc: BaseException) -> str:
    """What a person should do about an error that is not retried."""
    status = status_of(exc)
    message = api_error_message(exc)
    if status == 401:
        return "the API server rejected the credentials: check the token or kubeconfig"
    if status == 403 and "exceeded quota" in message:
        return "a ResourceQuota in the namespace is exhausted: raise it or ask for smaller pods"
    if status == 403:
        return (
            "forbidden by RBAC: grant the service account the verb on this resource "
            "(Role + RoleBinding)"
        )
    if status == 404:
        return "not found: check the namespace and the object's name"
    if status == 409:
        return "conflict: the object already exists or was changed concurrently"
    if status == 422:
        return "the API server rejected the object as invalid: fix the pod spec or template"
    if status == 400:
        return "bad request: the request or object is malformed"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS verification of the API server failed: check the cluster CA"
    return "not retriable"


def retry_after_seconds(exc: BaseException) -> float | None:
    """The server's ``Retry-After`` (seconds) on a retriable error (429, 5xx), else None.

    Read from the header, or from ``Status.details.retryAfterSeconds`` when the header is
    missing (watch streams carry only the body). HTTP-date values are ignored.
    """
    if not isinstance(exc, ApiException) or not is_retriable(exc):
        return None
    headers = exc.headers
    if headers is not None:
        raw = headers.get("Retry-After")
        if raw is not None:
            try:
                value = float(str(raw).strip())
            except ValueError:
                value = -1.0
            if value >= 0:
                return value
    details = api_status_body(exc).get("details")
    if isinstance(details, dict):
        seconds = details.get("retryAfterSeconds")
        if isinstance(seconds, int | float) and seconds >= 0:
            return float(seconds)
    return None


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_error: Callable[[int], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Await ``fn()``; retry transient errors per ``policy``; raise the last error otherwise.

    ``what`` names the operation in log lines ("create pod x"). ``on_error(status)`` is called
    for every failed attempt (0 for connection errors and timeouts), retried or not.
    """
    chance = rng if rng is not None else random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = status_of(exc)
            if on_error is not None:
                on_error(status)
            message = api_error_message(exc)
            retriable = is_retriable(exc)
            if not retriable or attempt >= policy.attempts:
                log.warning(
                    "kube_call_failed",
                    what=what,
                    status=status,
                    reason=api_error_reason(exc),
                    message=message,
                    retrying=False,
                    hint=f"gave up after {attempt} attempts"
                    if retriable
                    else explain_api_error(exc),
                )
                raise
            delay = _delay_before_retry(exc, retry_number=attempt, policy=policy, rng=chance)
            log.info(
                "kube_call_retry",
                what=what,
                status=status,
                message=message,
                attempt=attempt,
                delay=round(delay, 3),
            )
            await sleep(delay)


def _delay_before_retry(
    exc: BaseException, *, retry_number: int, policy: RetryPolicy, rng: random.Random
) -> float:
    server_says = retry_after_seconds(exc)
    if server_says is not None:
        # At least what the server asked for; a little jitter so that many callers told
        # the same number do not come back in the same millisecond.
        return min(server_says, policy.max_retry_after) + rng.uniform(0.0, policy.base_delay)
    return backoff_delay(
        retry_number, base_delay=policy.base_delay, max_delay=policy.max_delay, rng=rng
    )
