"""The daemon works with exactly the RBAC it ships (conf/kubernetes/rbac.yaml), and says so
clearly when a permission is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio import client

from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    apply_shipped_rbac,
    manifest,
    service_account_kubeconfig,
)
from tests.integration.daemon_harness import running_daemon
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


async def test_the_shipped_least_privilege_role_is_enough(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    await apply_shipped_rbac(dev_cluster, namespace=namespace)
    core = client.CoreV1Api(kube_api)
    kubeconfig = await service_account_kubeconfig(
        core, dev_cluster, namespace=namespace, account="rmd", path=tmp_path / "rmd.kubeconfig"
    )
    extra = {"resourcemanager.taskmanager-timeout": "1 s"}
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        extra=extra,
        kubeconfig=kubeconfig,
    ) as daemon:
        await daemon.put_requirement("job-r", 8)
        await daemon.wait_fulfilled("job-r")
        assert len(await daemon.live_pod_names()) == 2
        async with daemon.http.delete(f"{daemon.url}/v1/jobs/job-r") as resp:
            assert resp.status == 204

        async def released() -> bool:
            return not await daemon.live_pod_names()

        await eventually(released, timeout=30, what="idle pods deleted by the limited daemon")
        metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
        assert 'rmd_kubernetes_api_errors_total{code="403"}' not in metrics
        # The state label (pods patch) and the Events (events create, patch) are allowed too.
        assert 'rmd_pod_state_label_patches_total{result="written"} 0.0' not in metrics
        assert 'rmd_pod_state_label_patches_total{result="failed"} 0.0' in metrics
        assert 'rmd_kubernetes_events_written_total{write="create"} 0.0' not in metrics
        assert "rmd_kubernetes_events_dropped_total{" not in metrics


async def test_without_watch_permission_the_daemon_is_not_ready(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    await core.create_namespaced_service_account(
        namespace, body=manifest({"metadata": {"name": "half"}}), _request_timeout=REQUEST_TIMEOUT
    )
    await rbac.create_namespaced_role(
        namespace,
        body=manifest(
            {
                "metadata": {"name": "half"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}],
            }
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        body=manifest(
            {
                "metadata": {"name": "half"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "half",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "half", "namespace": namespace}],
            }
        ),
        _request_timeout=REQUEST_TIMEOUT,
    )
    kubeconfig = await service_account_kubeconfig(
        core, dev_cluster, namespace=namespace, account="half", path=tmp_path / "half.kubeconfig"
    )
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        kubeconfig=kubeconfig,
        wait_ready=False,
    ) as daemon:

        async def listed_once() -> bool:
            metrics = await (await daemon.http.get(f"{daemon.url}/metrics")).text()
            return 'rmd_watch_restarts_total{reason="forbidden"}' in metrics

        await eventually(listed_once, timeout=30, what="the forbidden list counted")
        async with daemon.http.get(f"{daemon.url}/readyz") as resp:
            assert resp.status == 503
        async with daemon.http.put(
            f"{daemon.url}/v1/jobs/j/requirements", json={"slots": 1}
        ) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
