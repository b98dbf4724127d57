"""Publishing the flink-config-<cluster-id> ConfigMap against the real API server: create,
unchanged, update, and concurrent writers; with exactly the shipped role, at daemon start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from rmd.config.files import parse_config_yaml
from rmd.kube.flinkconfigmap import FlinkConfigMap, publish_flink_config_map
from rmd.kube.podspec import OwnerReference
from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    apply_shipped_rbac,
    service_account_kubeconfig,
)
from tests.integration.daemon_harness import running_daemon
from tests.support.flink import create_jobmanager_deployment

pytestmark = pytest.mark.integration


def _config_map(namespace: str, text: str) -> FlinkConfigMap:
    return FlinkConfigMap(
        name="flink-config-cm",
        namespace=namespace,
        labels={"type": "flink-native-kubernetes", "app": "cm"},
        data={"config.yaml": text},
    )


async def test_publish_creates_then_leaves_alone_then_updates(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    first = _config_map(namespace, "a: '1'\n")
    assert await publish_flink_config_map(kube_api, first, owner=None, timeout=10) == "created"
    assert await publish_flink_config_map(kube_api, first, owner=None, timeout=10) == "unchanged"
    await create_jobmanager_deployment(kube_api, namespace=namespace, name="cm")
    deployment = await client.AppsV1Api(kube_api).read_namespaced_deployment(
        "cm", namespace, _request_timeout=REQUEST_TIMEOUT
    )
    owner = OwnerReference(
        api_version="apps/v1", kind="Deployment", name="cm", uid=deployment.metadata.uid
    )
    second = _config_map(namespace, "a: '2'\n")
    assert await publish_flink_config_map(kube_api, second, owner=owner, timeout=10) == "updated"
    stored = await core.read_namespaced_config_map(
        "flink-config-cm", namespace, _request_timeout=REQUEST_TIMEOUT
    )
    assert stored.data == {"config.yaml": "a: '2'\n"}
    assert [ref.uid for ref in stored.metadata.owner_references] == [deployment.metadata.uid]


async def test_concurrent_publishers_all_succeed_and_one_version_wins(
    kube_api: client.ApiClient, namespace: str
) -> None:
    versions = [_config_map(namespace, f"n: '{n}'\n") for n in range(5)]
    outcomes = await asyncio.gather(
        *(publish_flink_config_map(kube_api, v, owner=None, timeout=10) for v in versions)
    )
    assert outcomes.count("created") == 1, outcomes
    stored = await client.CoreV1Api(kube_api).read_namespaced_config_map(
        "flink-config-cm", namespace, _request_timeout=REQUEST_TIMEOUT
    )
    assert stored.data in [dict(v.data) for v in versions]


async def test_the_shipped_role_lets_the_daemon_publish_and_update_the_configmap(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await apply_shipped_rbac(dev_cluster, namespace=namespace)
    core = client.CoreV1Api(kube_api)
    kubeconfig = await service_account_kubeconfig(
        core, dev_cluster, namespace=namespace, account="rmd", path=tmp_path / "rmd.kubeconfig"
    )
    await create_jobmanager_deployment(kube_api, namespace=namespace, name="flink-cm")
    extra = {"rmd.taskmanager.supervise-flink": "true", "jobmanager.rpc.address": "10.9.8.7"}
    for slots in ("2", "3"):  # the second start changes the content: an update
        async with running_daemon(
            dev_cluster=dev_cluster,
            kube_api=kube_api,
            namespace=namespace,
            cluster_id="flink-cm",
            extra={**extra, "taskmanager.numberOfTaskSlots": slots},
            kubeconfig=kubeconfig,
        ):
            stored = await core.read_namespaced_config_map(
                "flink-config-flink-cm", namespace, _request_timeout=REQUEST_TIMEOUT
            )
            published = parse_config_yaml(stored.data["config.yaml"])
            assert published["taskmanager.numberOfTaskSlots"] == slots
            assert published["jobmanager.rpc.address"] == "10.9.8.7"
            assert stored.metadata.owner_references[0].name == "flink-cm"
