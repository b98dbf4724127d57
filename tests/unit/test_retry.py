"""Retry classification, backoff with full jitter, Retry-After, and the error callback."""

from __future__ import annotations

import json
import random

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from multidict import CIMultiDict, CIMultiDictProxy
from structlog.testing import capture_logs

from rmd.kube.pods import PodCreateError
from rmd.kube.retry import (
    KUBE_BACKOFF,
    api_error_message,
    api_error_reason,
    call_with_retries,
    explain_api_error,
    is_admission_denial,
    is_retriable,
    retry_after_seconds,
)
from rmd.retry import Backoff, Pacing, RetryPolicy


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


# What call_with_retries used before it had a time budget: six tries, 0.2 s doubling to 10 s.
SIX_TRIES = RetryPolicy(backoff=KUBE_BACKOFF, max_attempts=6)


def pacing(sleep: FakeSleep, seed: int | None = None) -> Pacing:
    chance = random.Random(seed)
    return Pacing(sleep=sleep, uniform=chance.random)


def api_error(
    status: int,
    message: str = "",
    *,
    reason: str = "",
    retry_after: str | None = None,
    details: dict[str, object] | None = None,
) -> ApiException:
    exc = ApiException(status=status, reason=reason or "Error")
    body: dict[str, object] = {
        "kind": "Status",
        "code": status,
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    exc.body = json.dumps(body).encode()
    headers: CIMultiDict[str] = CIMultiDict()
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    exc.headers = CIMultiDictProxy(headers)
    return exc


class Flaky:
    """Fails with the given errors in order, then returns ``result``."""

    def __init__(self, errors: list[BaseException], result: str = "ok") -> None:
        self.errors = list(errors)
        self.calls = 0
        self.result = result

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_throttling_and_server_errors_are_retriable(status: int) -> None:
    assert is_retriable(api_error(status))


@pytest.mark.parametrize("status", [0, 400, 401, 403, 404, 409, 410, 422])
def test_client_errors_are_not_retriable(status: int) -> None:
    assert not is_retriable(api_error(status))


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("cut"),
        TimeoutError(),
        aiohttp.ServerTimeoutError("read"),
        ConnectionResetError(),
    ],
)
def test_connection_errors_and_timeouts_are_retriable(exc: BaseException) -> None:
    assert is_retriable(exc)


def test_programming_errors_are_not_retriable() -> None:
    assert not is_retriable(ValueError("bad"))
    assert not is_retriable(KeyError("x"))


def test_backoff_is_full_jitter_below_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    for retry in range(1, 12):
        ceiling = min(10.0, 0.2 * 2 ** (retry - 1))
        backoff = Backoff(base=0.2, cap=10.0)
        delays = [backoff.delay(retry, uniform=rng.random) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # full jitter spreads over the whole range, not just near the ceiling
        assert min(delays) < ceiling * 0.2
        assert max(delays) > ceiling * 0.8


def test_backoff_with_a_minimum_fraction_stays_in_the_upper_part_of_the_range() -> None:
    rng = random.Random(7)
    for retry in range(1, 12):
        ceiling = min(5.0, 0.2 * 2 ** (retry - 1))
        backoff = Backoff(base=0.2, cap=5.0, min_fraction=0.5)
        delays = [backoff.delay(retry, uniform=rng.random) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert min(delays) < ceiling * 0.6
        assert max(delays) > ceiling * 0.9


async def test_transient_errors_are_retried_until_success() -> None:
    sleep = FakeSleep()
    seen: list[int] = []
    fn = Flaky([api_error(503), aiohttp.ServerDisconnectedError(), api_error(500)])
    result = await call_with_retries(
        fn, policy=SIX_TRIES, what="test", on_error=seen.append, pacing=pacing(sleep, 1)
    )
    assert result == "ok"
    assert fn.calls == 4
    assert seen == [503, 0, 500]
    assert len(sleep.delays) == 3
    assert all(0 <= d <= 10.0 for d in sleep.delays)


async def test_gives_up_after_the_configured_attempts_with_the_last_error() -> None:
    sleep = FakeSleep()
    errors: list[BaseException] = [api_error(500, f"boom {i}") for i in range(10)]
    fn = Flaky(errors)
    with pytest.raises(ApiException) as raised:
        await call_with_retries(
            fn, policy=RetryPolicy(max_attempts=3), what="test", pacing=pacing(sleep, 1)
        )
    assert fn.calls == 3
    assert len(sleep.delays) == 2
    assert api_error_message(raised.value) == "boom 2"


async def test_retry_after_on_429_is_honoured_not_the_backoff() -> None:
    sleep = FakeSleep()
    fn = Flaky([api_error(429, retry_after="3"), api_error(429, retry_after="1")])
    backoff = Backoff(base=0.2, cap=0.5, retry_after_jitter=0.2)
    policy = RetryPolicy(backoff=backoff, max_attempts=6)
    assert await call_with_retries(fn, policy=policy, what="test", pacing=pacing(sleep, 3)) == "ok"
    assert sleep.delays[0] >= 3.0
    assert sleep.delays[0] <= 3.0 + backoff.retry_after_jitter
    assert 1.0 <= sleep.delays[1] <= 1.0 + backoff.retry_after_jitter


async def test_retry_after_on_503_from_status_details_when_header_missing() -> None:
    exc = api_error(503, details={"retryAfterSeconds": 2})
    assert retry_after_seconds(exc) == 2.0
    sleep = FakeSleep()
    policy = RetryPolicy(backoff=Backoff(base=0.1, cap=0.1), max_attempts=6)
    await call_with_retries(Flaky([exc]), policy=policy, what="t", pacing=pacing(sleep, 0))
    assert sleep.delays[0] >= 2.0


def test_retry_after_is_ignored_on_errors_not_retried_and_on_dates() -> None:
    assert retry_after_seconds(api_error(403, retry_after="5")) is None
    assert retry_after_seconds(api_error(500, retry_after="5")) == 5.0  # e.g. ServerTimeout
    assert retry_after_seconds(api_error(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")) is None


async def test_huge_retry_after_is_capped() -> None:
    sleep = FakeSleep()
    backoff = Backoff(base=0.2, cap=10.0, max_retry_after=30.0, retry_after_jitter=0.2)
    await call_with_retries(
        Flaky([api_error(429, retry_after="3600")]),
        policy=RetryPolicy(backoff=backoff),
        what="t",
        pacing=pacing(sleep, 0),
    )
    assert 30.0 <= sleep.delays[0] <= 30.0 + backoff.retry_after_jitter


@pytest.mark.parametrize(
    ("status", "message", "hint_part"),
    [
        (
            403,
            'pods is forbidden: User "system:serviceaccount:ns:sa" cannot create resource',
            "RBAC",
        ),
        (
            403,
            'pods "p" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, '
            "limited: pods=2",
            "ResourceQuota",
        ),
        (422, 'Pod "p" is invalid: spec.containers[0].image: Required value', "invalid"),
        (401, "Unauthorized", "credentials"),
    ],
)
async def test_client_errors_raise_at_once_and_log_why(
    status: int, message: str, hint_part: str
) -> None:
    sleep = FakeSleep()
    seen: list[int] = []
    fn = Flaky([api_error(status, message)])
    with capture_logs() as logs, pytest.raises(ApiException) as raised:
        await call_with_retries(
            fn,
            policy=SIX_TRIES,
            what="create pod p",
            on_error=seen.append,
            pacing=pacing(sleep),
        )
    assert fn.calls == 1
    assert sleep.delays == []
    assert seen == [status]
    assert raised.value.status == status
    failed = [entry for entry in logs if entry["event"] == "kube_call_failed"]
    assert len(failed) == 1
    assert failed[0]["message"] == message  # the API server's words, unchanged
    assert failed[0]["retrying"] is False
    assert hint_part in failed[0]["hint"]
    assert failed[0]["what"] == "create pod p"


async def test_an_expected_status_is_raised_without_a_warning() -> None:
    fn = Flaky([api_error(404, 'configmaps "x" not found')])
    with capture_logs() as logs, pytest.raises(ApiException):
        await call_with_retries(
            fn,
            policy=SIX_TRIES,
            what="read x",
            pacing=pacing(FakeSleep()),
            expected=frozenset({404}),
        )
    assert fn.calls == 1
    assert [entry for entry in logs if entry["event"] == "kube_call_failed"] == []


# kube-apiserver 1.20's own words (authorizer, ResourceQuota, NamespaceLifecycle, LimitRanger,
# PodSecurityPolicy) and those of a webhook and of PodSecurity (1.22+)
RBAC_DENIAL = (
    'pods is forbidden: User "system:serviceaccount:ns:rmd" cannot create resource "pods" '
    'in API group "" in the namespace "ns"'
)
FORBIDDEN_403S = [
    (RBAC_DENIAL, "Forbidden", True),
    (
        'pods "p" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, '
        "limited: pods=1",
        "QuotaExceeded",
        True,
    ),
    ('pods "p" is forbidden: status unknown for quota: q, resources: pods', "Forbidden", True),
    (
        'pods "p" is forbidden: unable to create new content in namespace ns because it is '
        "being terminated",
        "Forbidden",
        True,
    ),
    (
        'pods "p" is forbidden: maximum cpu usage per Container is 100m, but limit is 1',
        "AdmissionDenied",
        False,
    ),
    (
        'pods "p" is forbidden: PodSecurityPolicy: unable to admit pod: []',
        "AdmissionDenied",
        False,
    ),
    (
        'admission webhook "deny.example.com" denied the request: no privileged pods',
        "AdmissionDenied",
        False,
    ),
    (
        'pods "p" is forbidden: violates PodSecurity "restricted:latest": '
        "allowPrivilegeEscalation != false",
        "AdmissionDenied",
        False,
    ),
]


@pytest.mark.parametrize(("message", "reason", "sent_again"), FORBIDDEN_403S)
def test_a_403_says_whether_the_caller_or_the_pod_was_refused(
    message: str, reason: str, sent_again: bool
) -> None:
    # RBAC, an exhausted quota, a namespace going away: nothing about the pod — the same
    # create is sent again, no start failure. Admission refusing the pod: a start failure.
    error = api_error(403, message, reason="Forbidden")
    assert api_error_reason(error) == reason
    assert is_admission_denial(error) is (not sent_again)
    failed = PodCreateError.from_exception(error)
    assert (failed.reason, failed.pod_not_judged) == (reason, sent_again)
    if not sent_again:
        assert "admission plugin or webhook" in explain_api_error(error)


def test_quota_denial_has_its_own_reason() -> None:
    quota = api_error(403, "exceeded quota: q, requested: pods=1", reason="Forbidden")
    rbac = api_error(403, RBAC_DENIAL, reason="Forbidden")
    assert api_error_reason(quota) == "QuotaExceeded"
    assert api_error_reason(rbac) == "Forbidden"
    assert api_error_reason(TimeoutError()) == "Timeout"
    assert api_error_reason(aiohttp.ServerDisconnectedError()) == "ConnectionError"


def test_error_message_from_a_watch_style_exception_without_body() -> None:
    exc = ApiException(status=410, reason="Expired: too old resource version: 1 (2)")
    assert api_error_message(exc) == "Expired: too old resource version: 1 (2)"


async def test_cancellation_is_not_retried() -> None:
    import asyncio

    sleep = FakeSleep()
    fn = Flaky([asyncio.CancelledError()])
    seen: list[int] = []
    with pytest.raises(asyncio.CancelledError):
        await call_with_retries(
            fn, policy=SIX_TRIES, what="t", on_error=seen.append, pacing=pacing(sleep)
        )
    assert fn.calls == 1
    assert seen == []


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(max_elapsed=-1)
    with pytest.raises(ValueError, match="floor <= base"):
        Backoff(base=-1)
    with pytest.raises(ValueError, match="negative"):
        Backoff(max_retry_after=-1)


@pytest.mark.parametrize(
    ("error", "api_unavailable"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (aiohttp.ClientConnectionError("refused"), True),
        (aiohttp.ServerDisconnectedError(), True),
        (TimeoutError(), True),
        (api_error(429, "slow down"), True),
        (api_error(500, "etcdserver: request timed out"), True),
        (api_error(503, "unavailable"), True),
        (api_error(403, "exceeded quota: q"), False),
        (api_error(403, RBAC_DENIAL), False),
        (api_error(422, "invalid"), False),
        (api_error(409, "already exists"), False),
    ],
)
def test_a_pod_error_says_whether_the_api_server_was_unavailable(
    error: BaseException, api_unavailable: bool
) -> None:
    # The allocator counts a create that failed on the pod's own account as a start failure;
    # one the API server never judged (down, throttled, 5xx) it must not.
    failed = PodCreateError.from_exception(error)
    assert failed.api_unavailable is api_unavailable
    assert failed.retriable is api_unavailable
