"""Retries against injected faults: the fault proxy sits between the client and the API server."""

from __future__ import annotations

import itertools

import pytest
from kubernetes_asyncio import client

from rmd.kube.pods import PodCreateError, PodGateway
from rmd.retry import Backoff, RetryPolicy
from tests.integration.test_kube_pods import SELECTOR, pod_body
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

FAST_ATTEMPTS = 4
FAST_RETRY = RetryPolicy(
    backoff=Backoff(base=0.05, cap=0.2, retry_after_jitter=0.05), max_attempts=FAST_ATTEMPTS
)
PODS_PATH = r"/pods$"


async def test_429_retry_after_is_honoured(
    proxy: FaultProxy, proxied_api: client.ApiClient, namespace: str
) -> None:
    fault = proxy.inject(method="POST", path_regex=PODS_PATH, status=429, retry_after=1, times=2)
    errors: list[int] = []
    pods = PodGateway(
        proxied_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append
    )
    await pods.create(pod_body("c1-taskmanager-1-1"))
    assert fault.hits == 2
    assert errors == [429, 429]
    posts = proxy.requests_matching(method="POST", path_regex=PODS_PATH)
    assert [r.status for r in posts] == [429, 429, 201]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(posts)]
    # Retry-After: 1 is honoured although the policy's own backoff tops out at 0.2 s
    assert all(gap >= 1.0 for gap in gaps), gaps
    found, _ = await pods.list(label_selector=SELECTOR)
    assert [p["metadata"]["name"] for p in found] == ["c1-taskmanager-1-1"]


async def test_503_then_success(
    proxy: FaultProxy, proxied_api: client.ApiClient, namespace: str
) -> None:
    proxy.inject(method="POST", path_regex=PODS_PATH, status=503, times=1)
    errors: list[int] = []
    pods = PodGateway(
        proxied_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append
    )
    await pods.create(pod_body("c1-taskmanager-1-1"))
    assert errors == [503]
    assert [r.status for r in proxy.requests_matching(method="POST")] == [503, 201]


async def test_every_request_is_timed_with_its_verb_and_result(
    proxy: FaultProxy, proxied_api: client.ApiClient, namespace: str
) -> None:
    requests: list[tuple[str, str, float]] = []
    pods = PodGateway(
        proxied_api,
        namespace=namespace,
        retry=FAST_RETRY,
        on_request=lambda verb, result, seconds: requests.append((verb, result, seconds)),
    )
    proxy.inject(method="POST", path_regex=PODS_PATH, status=503, times=1)
    proxy.inject(method="DELETE", path_regex=r"/pods/", status=500, times=1)
    await pods.create(pod_body("c1-taskmanager-1-1"))
    await pods.create(pod_body("c1-taskmanager-1-1"))  # 409, then a read of our own pod
    await pods.list(label_selector=SELECTOR)
    await pods.delete("c1-taskmanager-1-1", grace_period_seconds=0)

    assert [(verb, result) for verb, result, _ in requests] == [
        ("create", "server-error"),
        ("create", "success"),
        ("create", "client-error"),
        ("get", "success"),
        ("list", "success"),
        ("delete", "server-error"),
        ("delete", "success"),
    ]
    assert all(0 < seconds < 30 for _, _, seconds in requests)


async def test_connection_closed_without_answer_is_retried(
    proxy: FaultProxy, proxied_api: client.ApiClient, namespace: str
) -> None:
    proxy.inject(method="POST", path_regex=PODS_PATH, status=0, times=1)
    errors: list[int] = []
    pods = PodGateway(
        proxied_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append
    )
    await pods.create(pod_body("c1-taskmanager-1-1"))
    assert errors == [0]
    assert [r.status for r in proxy.requests_matching(method="POST")] == [0, 201]


async def test_lost_answer_to_a_create_that_happened_is_still_one_pod(
    proxy: FaultProxy, proxied_api: client.ApiClient, namespace: str
) -> None:
    # The API server creates the pod, the client sees 504: the retry meets 409 for our own
    # pod and counts the create as done.
    proxy.inject(method="POST", path_regex=PODS_PATH, status=504, times=1, forward_first=True)
    errors: list[int] = []
    pods = PodGateway(
        proxied_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append
    )
    await pods.create(pod_body("c1-taskmanager-1-1"))
    assert errors == [504, 409]
    found, _ = await pods.list(label_selector=SELECTOR)
    assert [p["metadata"]["name"] for p in found] == ["c1-taskmanager-1-1"]


async def test_persistent_server_errors_give_up_as_retriable(
    proxy: FaultProxy, proxied_api: client.ApiClient, namespace: str
) -> None:
    proxy.inject(
        method="POST",
        path_regex=PODS_PATH,
        status=500,
        times=None,
        message="etcdserver: request timed out",
    )
    errors: list[int] = []
    pods = PodGateway(
        proxied_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append
    )
    with pytest.raises(PodCreateError) as raised:
        await pods.create(pod_body("c1-taskmanager-1-1"))
    assert errors == [500] * FAST_ATTEMPTS
    assert raised.value.retriable is True
    assert raised.value.api_unavailable is True  # the API failed, not the pod
    assert raised.value.message == "etcdserver: request timed out"
    assert raised.value.status == 500


async def test_delete_retries_throttling(
    proxy: FaultProxy, proxied_api: client.ApiClient, namespace: str
) -> None:
    pods = PodGateway(proxied_api, namespace=namespace, retry=FAST_RETRY)
    await pods.create(pod_body("c1-taskmanager-1-1"))
    proxy.inject(
        method="DELETE", path_regex=r"/pods/c1-taskmanager-1-1$", status=429, retry_after=0, times=1
    )
    await pods.delete("c1-taskmanager-1-1", grace_period_seconds=0)
    deletes = proxy.requests_matching(method="DELETE")
    assert [r.status for r in deletes] == [429, 200]
