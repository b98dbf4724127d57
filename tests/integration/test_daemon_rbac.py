"""The daemon works with exactly the RBAC it ships (conf/kubernetes/rbac.yaml), and stops at
start-up with one line naming a missing permission and its fix."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from rmd.config.settings import RmdSettings
from rmd.kube.permissions import check_daemon_permissions, needs_for
from rmd.retry import Backoff, RetryPolicy
from rmd_dev.cluster import free_port
from tests.conftest import (
    REQUEST_TIMEOUT,
    DevClusterInfo,
    apply_shipped_rbac,
    service_account_kubeconfig,
)
from tests.integration.daemon_harness import daemon_overrides, running_daemon
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import eventually, eventually_true

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


# (API group, resource, verb) taken out of the shipped Role, and the configuration that needs it.
REMOVED_RULES = [
    pytest.param(("", "pods", "watch"), {}, id="watch-pods"),
    pytest.param(("", "pods", "delete"), {}, id="delete-pods"),
    pytest.param(("apps", "deployments", "get"), {}, id="get-deployments"),
    pytest.param(
        ("", "configmaps", "create"),
        {"rmd.taskmanager.supervise-flink": "true", "jobmanager.rpc.address": "10.9.8.7"},
        id="create-configmaps",
    ),
]


@pytest.mark.parametrize(("removed", "extra"), REMOVED_RULES)
async def test_a_rule_missing_from_the_role_stops_the_daemon_at_start_naming_it(
    dev_cluster: DevClusterInfo,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    removed: tuple[str, str, str],
    extra: dict[str, str],
) -> None:
    """``rmd daemon`` as a process, as the service account bound to rbac.yaml less one verb:
    it exits 1 before creating anything, with one line naming the verb, the resource and
    the fix."""
    group, resource, verb = removed
    await apply_shipped_rbac(dev_cluster, namespace=namespace, without=removed)
    core = client.CoreV1Api(kube_api)
    kubeconfig = await service_account_kubeconfig(
        core, dev_cluster, namespace=namespace, account="rmd", path=tmp_path / "rmd.kubeconfig"
    )
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    overrides = daemon_overrides(
        cluster_id="denied", namespace=namespace, port=free_port(), extra=extra
    )
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "rmd", "daemon", "--kubeconfig", str(kubeconfig)],
        *["--conf-dir", str(conf_dir)],
        *[arg for override in overrides for arg in ("-D", override)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 1, stderr.decode()
    lines = stderr.decode().splitlines()  # JSON log lines, then the message
    message = lines[-1]
    assert [line for line in lines if not line.startswith("{")] == [message], lines
    qualified = f"{resource}.{group}" if group else resource
    assert message.startswith(
        f"rmd daemon: missing permission: service account {namespace}/rmd may not {verb} "
        f"{qualified} in namespace {namespace}"
    ), message
    assert f"--verb={verb} --resource={qualified}" in message
    assert f"--serviceaccount={namespace}:rmd" in message
    assert f'apiGroups: ["{group}"], resources: ["{resource}"], verbs: ["{verb}"]' in message
    assert (await core.list_namespaced_pod(namespace, _request_timeout=REQUEST_TIMEOUT)).items == []
    config_maps = await core.list_namespaced_config_map(namespace, _request_timeout=REQUEST_TIMEOUT)
    assert [c.metadata.name for c in config_maps.items] == ["kube-root-ca.crt"]


async def test_an_api_server_that_does_not_answer_the_check_is_no_denial(
    kube_api: client.ApiClient, proxy: FaultProxy, dev_cluster: DevClusterInfo, namespace: str
) -> None:
    """Reviews lost to an outage: the check gives up after its retries and says "unchecked"
    (the daemon then starts as it did before the check); the same check answered says
    "granted"."""
    needs = needs_for(RmdSettings(cluster_id="c", namespace=namespace))
    short = RetryPolicy(backoff=Backoff(base=0.05, cap=0.2), max_elapsed=1.0)
    async with client.ApiClient(proxy.configuration(token=dev_cluster.admin_token)) as api:
        proxy.inject(method="POST", path_regex="selfsubjectaccessreviews", status=0, times=None)
        assert not await check_daemon_permissions(
            api, needs, namespace=namespace, timeout=5, max_parallel=4, retry=short
        )
        proxy.clear_faults()
        assert await check_daemon_permissions(
            api, needs, namespace=namespace, timeout=5, max_parallel=4, retry=short
        )


async def test_the_reviews_run_concurrently_within_the_request_limit(
    kube_api: client.ApiClient, proxy: FaultProxy, dev_cluster: DevClusterInfo, namespace: str
) -> None:
    """Held by the API server, exactly ``max_parallel`` reviews are in flight at once (not
    one, not all); released, every need is answered."""
    needs = needs_for(RmdSettings(cluster_id="c", namespace=namespace))
    assert len(needs) > 3
    release = asyncio.Event()
    held = proxy.inject(
        method="POST", path_regex="selfsubjectaccessreviews", status=None, gate=release, times=None
    )
    async with client.ApiClient(proxy.configuration(token=dev_cluster.admin_token)) as api:
        check = asyncio.create_task(
            check_daemon_permissions(api, needs, namespace=namespace, timeout=10, max_parallel=3)
        )
        try:
            await eventually_true(lambda: held.hits == 3, what="three reviews in flight")
            # one more round trip through the proxy: a fourth review would have arrived by now
            await client.CoreV1Api(api).read_namespace(namespace, _request_timeout=5)
            assert held.hits == 3
            assert not check.done()
            release.set()
            async with asyncio.timeout(30):
                assert await check
        finally:
            release.set()
            check.cancel()
    assert held.hits == len(needs)
