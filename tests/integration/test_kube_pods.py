"""PodGateway against the real control plane: idempotent create, delete, list, errors."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, cast

import aiohttp
import pytest
from kubernetes_asyncio import client

from rmd.kube.listwatch import ResourceQuery, list_objects
from rmd.kube.owner import OwnerReference, delete_owner, find_owner_reference
from rmd.kube.pods import PodCreateError, PodGateway
from rmd.retry import Backoff, RetryPolicy
from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    LimitedApiFactory,
    create_cpu_limit_range,
    create_pod_quota,
)
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually, eventually_true, within

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(
    backoff=Backoff(base=0.05, cap=0.2, retry_after_jitter=0.05), max_attempts=4
)


def pod_body(
    name: str,
    *,
    cluster: str = "c1",
    image: str = "flink:1.20",
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = {"type": "flink-native-kubernetes", "app": cluster, "component": "taskmanager"}
    labels.update(extra_labels or {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "flink-main-container", "image": image}],
        },
    }


SELECTOR = "type=flink-native-kubernetes,app=c1,component=taskmanager"


async def test_create_then_create_again_is_done_not_an_error(
    kube_api: client.ApiClient, namespace: str
) -> None:
    errors: list[int] = []
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append)
    await pods.create(pod_body("c1-taskmanager-1-1"))
    await pods.create(pod_body("c1-taskmanager-1-1"))  # 409 for our own pod: done
    found, resource_version = await pods.list(label_selector=SELECTOR)
    assert [p["metadata"]["name"] for p in found] == ["c1-taskmanager-1-1"]
    assert int(resource_version) > 0
    assert errors == [409]


async def test_create_answers_the_uid_builds_no_models_and_records_the_field_manager(
    kube_api: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    models: list[str] = []
    deserialize = kube_api.deserialize

    def counting(response: Any, response_type: Any, *args: Any, **kwargs: Any) -> Any:
        models.append(str(response_type))
        return deserialize(response, response_type, *args, **kwargs)

    monkeypatch.setattr(kube_api, "deserialize", counting)  # the library's, not rmd's
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY, field_manager="rmd-test")
    uid = await pods.create(pod_body("c1-taskmanager-1-1"))
    again = await pods.create(pod_body("c1-taskmanager-1-1"))  # 409: our own, read back
    assert models == []  # the answers were read as JSON, not turned into V1Pod models
    monkeypatch.undo()

    pod = await client.CoreV1Api(kube_api).read_namespaced_pod(
        "c1-taskmanager-1-1", namespace, _request_timeout=REQUEST_TIMEOUT
    )
    assert uid is not None
    assert uid == again == pod.metadata.uid
    managers = {entry.manager for entry in pod.metadata.managed_fields or []}
    assert "rmd-test" in managers


async def test_create_over_a_foreign_pod_of_the_same_name_fails(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    foreign = pod_body("c1-taskmanager-1-1")
    foreign["metadata"]["labels"] = {"app": "someone-else"}
    await core.create_namespaced_pod(
        namespace, cast(Any, foreign), _request_timeout=REQUEST_TIMEOUT
    )
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY)
    with pytest.raises(PodCreateError) as raised:
        await pods.create(pod_body("c1-taskmanager-1-1"))
    assert raised.value.reason == "AlreadyExists"
    assert raised.value.retriable is False
    assert "not ours" in raised.value.message
    assert 'pods "c1-taskmanager-1-1" already exists' in raised.value.message


async def test_invalid_pod_is_rejected_with_the_servers_message(
    kube_api: client.ApiClient, namespace: str
) -> None:
    errors: list[int] = []
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append)
    body = pod_body("c1-taskmanager-1-1")
    body["spec"]["containers"][0]["image"] = ""
    with pytest.raises(PodCreateError) as raised:
        await pods.create(body)
    assert raised.value.status == 422
    assert raised.value.reason == "Invalid"
    assert raised.value.retriable is False
    assert raised.value.api_unavailable is False
    assert "spec.containers[0].image: Required value" in raised.value.message
    assert errors == [422]  # not retried


async def test_delete_removes_the_pod_and_a_missing_pod_counts_as_deleted(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    errors: list[int] = []
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append)
    await pods.create(pod_body("c1-taskmanager-1-1"))
    await pods.delete("c1-taskmanager-1-1", grace_period_seconds=0)

    async def gone() -> bool:
        listed = await core.list_namespaced_pod(namespace, _request_timeout=REQUEST_TIMEOUT)
        return not listed.items

    await eventually(gone, what="the pod to be gone")
    await pods.delete("c1-taskmanager-1-1")  # 404 = done
    await pods.delete("never-existed", grace_period_seconds=0)
    assert errors == [404, 404]


async def test_label_patch_merges_labels_builds_no_models_and_404_is_false(
    kube_api: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = client.CoreV1Api(kube_api)
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY, field_manager="rmd-test")
    await pods.create(pod_body("c1-taskmanager-1-1"))
    models: list[str] = []
    deserialize = kube_api.deserialize

    def counting(response: Any, response_type: Any, *args: Any, **kwargs: Any) -> Any:
        models.append(str(response_type))
        return deserialize(response, response_type, *args, **kwargs)

    monkeypatch.setattr(kube_api, "deserialize", counting)  # the library's, not rmd's
    assert await pods.patch_labels("c1-taskmanager-1-1", {"rmd.dev/state": "registered"})
    assert await pods.patch_labels("c1-taskmanager-1-1", {"rmd.dev/state": "idle"})
    assert not await pods.patch_labels("never-existed", {"rmd.dev/state": "idle"})  # 404
    assert models == []  # the answers (whole pods) were read and dropped, not deserialized
    monkeypatch.undo()

    pod = await core.read_namespaced_pod("c1-taskmanager-1-1", namespace)
    assert pod.metadata.labels["rmd.dev/state"] == "idle"
    assert pod.metadata.labels["component"] == "taskmanager"  # merged, not replaced
    managers = {entry.manager for entry in pod.metadata.managed_fields or []}
    assert "rmd-test" in managers


async def test_list_selects_by_label(kube_api: client.ApiClient, namespace: str) -> None:
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY)
    ours = [f"c1-taskmanager-1-{i}" for i in range(1, 4)]
    await asyncio.gather(*(pods.create(pod_body(name)) for name in ours))
    await pods.create(pod_body("c2-taskmanager-1-1", cluster="c2"))
    found, _ = await pods.list(label_selector=SELECTOR)
    assert sorted(p["metadata"]["name"] for p in found) == ours
    other, _ = await pods.list(label_selector="app=c2")
    assert [p["metadata"]["name"] for p in other] == ["c2-taskmanager-1-1"]


async def test_raw_list_pages_through_everything(
    kube_api: client.ApiClient, namespace: str
) -> None:
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY)
    names = [f"c1-taskmanager-1-{i}" for i in range(1, 6)]
    await asyncio.gather(*(pods.create(pod_body(name)) for name in names))
    query = ResourceQuery(namespace=namespace, label_selector=SELECTOR)
    items, resource_version = await list_objects(kube_api, query, timeout=(5, 30), page_size=2)
    assert sorted(item["metadata"]["name"] for item in items) == names
    assert int(resource_version) > 0
    # The server keeps managedFields; the listing drops them (a resync holds every page).
    stored = await client.CoreV1Api(kube_api).read_namespaced_pod(names[0], namespace)
    assert stored.metadata.managed_fields
    assert not any("managedFields" in item["metadata"] for item in items)


async def compact_etcd(etcd_url: str) -> int:
    """Compact etcd's history up to its current revision (etcd's v3 JSON gateway)."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{etcd_url}/v3/kv/range", json={"key": "Lw==", "limit": 1, "keys_only": True}
        ) as answer:
            revision = int((await answer.json())["header"]["revision"])
        async with session.post(
            f"{etcd_url}/v3/kv/compaction", json={"revision": str(revision), "physical": True}
        ) as answer:
            assert answer.status == 200, await answer.text()
    return revision


async def test_paged_list_starts_over_after_a_real_410(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    # etcd compacts its history between two pages: the continue token expires (410 Gone from
    # the API server) and the list must start over for a consistent result.
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY)
    names = [f"c1-taskmanager-1-{i}" for i in range(1, 4)]
    await asyncio.gather(*(pods.create(pod_body(name)) for name in names))
    async with FaultProxy(upstream=dev_cluster.server, ca_file=dev_cluster.ca_file) as proxy:
        second_page = asyncio.Event()
        held = proxy.inject(
            method="GET",
            path_regex=r"/pods$",
            query_regex="continue=",
            status=None,
            gate=second_page,
            times=1,
        )
        async with client.ApiClient(proxy.configuration(token=dev_cluster.admin_token)) as api:
            query = ResourceQuery(namespace=namespace, label_selector=SELECTOR)
            listing = asyncio.create_task(list_objects(api, query, timeout=(5, 30), page_size=1))
            await eventually_true(lambda: held.hits == 1, what="the second page to be asked")
            # one more write, so that the first page's revision is strictly below the
            # compaction point (compacting at R keeps R itself readable)
            await client.CoreV1Api(kube_api).create_namespaced_config_map(
                namespace,
                cast(Any, {"metadata": {"name": "bump"}}),
                _request_timeout=REQUEST_TIMEOUT,
            )
            await compact_etcd(dev_cluster.etcd_url)
            second_page.set()
            items, resource_version = await within(listing, seconds=30, what="the paged LIST")
    assert sorted(item["metadata"]["name"] for item in items) == names
    pages = [(r.status, "continue=" in r.query) for r in proxy.requests]
    assert pages[:2] == [(200, False), (410, True)]  # first page, then the expired token
    assert pages[2] == (200, False)  # started over
    assert int(resource_version) > 0


async def test_forbidden_create_is_not_retried_and_says_why(
    namespace: str, limited_api_factory: LimitedApiFactory
) -> None:
    limited = await limited_api_factory(
        namespace, [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    )
    errors: list[int] = []
    pods = PodGateway(limited, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append)
    with pytest.raises(PodCreateError) as raised:
        await pods.create(pod_body("c1-taskmanager-1-1"))
    assert errors == [403]
    assert raised.value.reason == "Forbidden"
    assert raised.value.retriable is False
    assert 'cannot create resource "pods"' in raised.value.message
    assert f'in the namespace "{namespace}"' in raised.value.message


async def test_quota_denial_surfaces_unchanged(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    await create_pod_quota(core, namespace=namespace, name="two-pods", pods=1)
    errors: list[int] = []
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append)
    await pods.create(pod_body("c1-taskmanager-1-1"))
    with pytest.raises(PodCreateError) as raised:
        await pods.create(pod_body("c1-taskmanager-1-2"))
    assert errors == [403]
    assert raised.value.reason == "QuotaExceeded"
    assert raised.value.retriable is False
    assert raised.value.api_unavailable is False
    assert raised.value.pod_not_judged is True  # sent again, no start failure
    assert raised.value.message.startswith(
        'pods "c1-taskmanager-1-2" is forbidden: exceeded quota: two-pods'
    )
    assert "limited: pods=1" in raised.value.message


async def test_a_limitrange_denial_is_the_pods_fault(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """LimitRanger (admission) answers 403 Forbidden like RBAC and ResourceQuota do, but it
    refused the pod itself: AdmissionDenied, a start failure — not sent again unchanged."""
    core = client.CoreV1Api(kube_api)
    await create_cpu_limit_range(core, namespace=namespace, name="small", max_cpu="100m")
    body = pod_body("c1-taskmanager-1-1")
    body["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    errors: list[int] = []
    pods = PodGateway(kube_api, namespace=namespace, retry=FAST_RETRY, on_api_error=errors.append)
    with pytest.raises(PodCreateError) as raised:
        await pods.create(body)
    assert errors == [403]
    assert raised.value.reason == "AdmissionDenied"
    assert raised.value.pod_not_judged is False  # a start failure, paced by the limit
    assert raised.value.message == (
        'pods "c1-taskmanager-1-1" is forbidden: maximum cpu usage per Container is 100m, '
        "but limit is 1"
    )


async def _jobmanager_deployment(apps: client.AppsV1Api, *, namespace: str, name: str) -> Any:
    return await apps.create_namespaced_deployment(
        namespace,
        cast(
            Any,
            {
                "metadata": {"name": name},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": name, "component": "jobmanager"}},
                    "template": {
                        "metadata": {"labels": {"app": name, "component": "jobmanager"}},
                        "spec": {"containers": [{"name": "jm", "image": "flink:1.20"}]},
                    },
                },
            },
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )


async def test_owner_reference_of_the_jobmanager_deployment(
    kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    created = await _jobmanager_deployment(apps, namespace=namespace, name="c1")
    owner = await find_owner_reference(kube_api, namespace=namespace, deployment="c1", timeout=10)
    assert owner == OwnerReference(
        api_version="apps/v1", kind="Deployment", name="c1", uid=created.metadata.uid
    )
    missing = await find_owner_reference(
        kube_api, namespace=namespace, deployment=f"nope-{secrets.token_hex(2)}", timeout=10
    )
    assert missing is None


async def test_delete_owner_removes_its_deployment_and_what_it_owns_and_nothing_else(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """What an application cluster does when its application has ended."""
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    created = await _jobmanager_deployment(apps, namespace=namespace, name="c1")
    owner = OwnerReference(
        api_version="apps/v1", kind="Deployment", name="c1", uid=created.metadata.uid
    )
    await core.create_namespaced_config_map(
        namespace,
        cast(
            Any,
            {
                "metadata": {
                    "name": "flink-config-c1",
                    "ownerReferences": [owner.to_manifest()],
                },
                "data": {"config.yaml": "a: b\n"},
            },
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    stale = OwnerReference(api_version="apps/v1", kind="Deployment", name="c1", uid="0" * 36)
    assert not await delete_owner(kube_api, namespace=namespace, owner=stale, timeout=10)
    still = await apps.read_namespaced_deployment("c1", namespace)
    assert still.metadata.deletion_timestamp is None  # a Deployment of that name, not ours

    assert await delete_owner(kube_api, namespace=namespace, owner=owner, timeout=10)

    async def all_gone() -> bool:
        deployments = await apps.list_namespaced_deployment(namespace)
        maps = await core.list_namespaced_config_map(namespace)
        return not deployments.items and "flink-config-c1" not in {
            m.metadata.name for m in maps.items
        }

    await eventually(all_gone, what="the Deployment and the ConfigMap it owns gone", timeout=60)
    assert not await delete_owner(kube_api, namespace=namespace, owner=owner, timeout=10)


async def test_parallel_creates_are_bounded(
    kube_api: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pods = PodGateway(kube_api, namespace=namespace, max_parallel=2, retry=FAST_RETRY)
    in_flight = 0
    peak = 0
    original = kube_api.call_api

    async def counting(path: str, method: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, peak
        if method != "POST":
            return await original(path, method, *args, **kwargs)
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await original(path, method, *args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(kube_api, "call_api", counting)  # the library's, not rmd's
    await asyncio.gather(*(pods.create(pod_body(f"c1-taskmanager-1-{i}")) for i in range(8)))
    found, _ = await pods.list(label_selector=SELECTOR)
    assert len(found) == 8
    assert peak == 2
