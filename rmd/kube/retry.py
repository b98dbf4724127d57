"""Retrying Kubernetes API calls: which errors are worth another try, and how long to wait.

kubernetes_asyncio has no retries of its own. :func:`call_with_retries` (the retry loop of
:mod:`rmd.retry`) retries what is transient (429, 5xx, dropped connections, timeouts) with
exponential backoff and full jitter, honours ``Retry-After`` (429, 503, and the 500s that
carry one, e.g. ServerTimeout), and raises every other error at once with a log line that
says what to fix (RBAC, quota, invalid spec).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import structlog
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.retry import Backoff, Failure, Pacing, RetryPolicy, retry

T = TypeVar("T")

log = structlog.get_logger(__name__)

CONNECTION_ERROR_STATUS = 0  # what on_error receives for errors without an HTTP status


# Kubernetes calls: short first retries, at most 10 s apart, a server's Retry-After honoured
# up to a minute (with up to 0.2 s of spread, so throttled callers do not return together).
KUBE_BACKOFF = Backoff(base=0.2, cap=10.0, max_retry_after=60.0, retry_after_jitter=0.2)
# A call is retried for up to 30 s: long enough to ride out an API server restart or an etcd
# leader election, short enough that the caller hears of a real outage.
KUBE_CALL_RETRY = RetryPolicy(backoff=KUBE_BACKOFF, max_elapsed=30.0)
# A pod create gives up sooner: the allocator sends it again itself (same name, backing off
# from 1 s to 10 s), and meanwhile the job's reason can say the API server is unreachable —
# a create held in the gateway for 30 s would hide that and hold a parallelism slot.
KUBE_CREATE_MAX_ELAPSED = 3.0


def status_of(exc: BaseException) -> int:
    """The HTTP status of an API error; 0 for connection errors, timeouts and the like."""
    if isinstance(exc, ApiException):
        return int(exc.status or 0)
    return CONNECTION_ERROR_STATUS


_SHORT_REASONS = {401: "unauthorized", 403: "forbidden", 429: "throttled"}


# Called once per API request (every attempt, retries included): verb ("create", "delete",
# "list", "get"), result (see request_result) and the seconds it took.
RequestObserver = Callable[[str, str, float], None]
REQUEST_RESULTS = ("success", "client-error", "server-error", "no-answer")


def request_result(error: BaseException | None) -> str:
    """One of REQUEST_RESULTS: the HTTP status class, or no-answer (connection, timeout)."""
    if error is None:
        return "success"
    status = status_of(error)
    if status == 0:
        return "no-answer"
    return "server-error" if status >= 500 else "client-error"


def short_reason(exc: BaseException) -> str:
    """A short reason for a failed call, as a metric label: ``forbidden``, ``unauthorized``,
    ``throttled``, ``server-error``, ``http-NNN``, ``timeout``, ``disconnected`` or ``error``."""
    status = status_of(exc)
    if status:
        return _SHORT_REASONS.get(status) or (
            "server-error" if 500 <= status <= 599 else f"http-{status}"
        )
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientError | ConnectionError):
        return "disconnected"
    return "error"


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


# The authorizer's words in a 403 (RBAC, or any authorizer): 'User "u" cannot create resource
# "pods" in API group "" in the namespace "n"' (k8s.io/apiserver, responsewriters.forbiddenMessage)
_AUTHORIZATION_DENIAL = re.compile(r"\bcannot [a-z]+ (?:resource|path)\b")
# 403s of admission plugins that pass by themselves: an exhausted ResourceQuota (or one not
# computed yet) and a namespace being deleted (NamespaceLifecycle).
_TRANSIENT_ADMISSION_DENIALS = (
    "exceeded quota",
    "status unknown for quota",
    "because it is being terminated",
)
QUOTA_EXCEEDED = "QuotaExceeded"
ADMISSION_DENIED = "AdmissionDenied"


def is_admission_denial(exc: BaseException) -> bool:
    """A 403 for the object itself: an admission plugin or webhook refused it (LimitRanger,
    PodSecurityPolicy, PodSecurity, a validating webhook's "admission webhook ... denied the
    request"). The same object is refused again until a person changes the object or the
    policy. Not an authorization refusal (RBAC: the caller may not use the verb), not an
    exhausted ResourceQuota or a namespace being deleted (they pass by themselves)."""
    if not isinstance(exc, ApiException) or exc.status != 403:
        return False
    message = api_error_message(exc)
    if _AUTHORIZATION_DENIAL.search(message):
        return False
    return not any(words in message for words in _TRANSIENT_ADMISSION_DENIALS)


def api_error_reason(exc: BaseException) -> str:
    """A short machine-readable reason: the Status reason (Forbidden, Invalid, ...),
    ``QuotaExceeded`` for ResourceQuota denials, ``AdmissionDenied`` for 403s of admission
    (:func:`is_admission_denial`), ``ConnectionError``/``Timeout`` otherwise."""
    if isinstance(exc, ApiException):
        if exc.status == 403 and "exceeded quota" in api_error_message(exc):
            return QUOTA_EXCEEDED
        if is_admission_denial(exc):
            return ADMISSION_DENIED
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
    if is_admission_denial(exc):
        return (
            "an admission plugin or webhook refused the object itself (LimitRange, pod "
            "security, a validating webhook: see the message): change the pod spec or "
            "template, or the policy"
        )
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
    on_error: Callable[[int], None] | None = None,
    pacing: Pacing | None = None,
    expected: frozenset[int] = frozenset(),
    abandon: Callable[[], bool] | None = None,
) -> T:
    """Await ``fn()``; retry transient errors per ``policy``; raise the last error otherwise.

    ``what`` names the operation in log lines ("create pod x"). ``on_error(status)`` is called
    for every failed attempt (0 for connection errors and timeouts), retried or not.
    ``expected``: statuses the caller handles as an answer (e.g. 404 on a read of something
    that may not exist yet): raised without a warning.
    ``abandon()`` is asked before every attempt; when true, :class:`rmd.retry.Abandoned` is
    raised (a deposed leader sends nothing more).
    """

    def report(failure: Failure) -> None:
        error = failure.error
        status = status_of(error)
        if on_error is not None:
            on_error(status)
        message = api_error_message(error)
        if failure.delay is None and status in expected:
            return
        if failure.delay is None:
            log.warning(
                "kube_call_failed",
                what=what,
                status=status,
                reason=api_error_reason(error),
                message=message,
                retrying=False,
                hint=f"gave up after {failure.attempt} attempts"
                if is_retriable(error)
                else explain_api_error(error),
            )
            return
        log.info(
            "kube_call_retry",
            what=what,
            status=status,
            message=message,
            attempt=failure.attempt,
            delay=round(failure.delay, 3),
        )

    return await retry(
        fn,
        policy=policy,
        retriable=is_retriable,
        retry_after=retry_after_seconds,
        on_failure=report,
        abandon=abandon,
        pacing=pacing,
    )
