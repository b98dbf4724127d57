"""API economy: the requests one TaskManager lifecycle costs kube-apiserver, by its own count
(``apiserver_request_total``), so that no change can quietly add a request per pod, per
heartbeat or per second.

The real ``rmd daemon`` process, TaskManager agents as processes heartbeating every second,
``count`` lifecycles (declare → create → register → remove the job → idle delete → gone),
between two readings taken when the API server is quiet. The counts are of every client:
rows that other clients share (the node's final delete, its status reports, the scheduler's
binding) are counted with their share.
"""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from bench.api_economy import lifecycle_counts, rmd_requests
from bench.apiserver_requests import RequestKind
from bench.reaction import JobClient
from bench.scale_out import census
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo
from tests.integration.daemon_harness import running_daemon
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

LIFECYCLES = 3


async def test_a_taskmanager_lifecycle_costs_a_fixed_number_of_requests(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        as_process=True,
        # 1 s heartbeats over a registered phase and an idle timeout of 3 s: several
        # heartbeats per lifecycle, none of which may cost a request.
        extra={
            "resourcemanager.taskmanager-timeout": "3 s",
            "rmd.kubernetes.resync-interval": "5 min",
        },
    ) as daemon:
        core = client.CoreV1Api(kube_api)

        async def no_namespace_terminating() -> bool:
            """An earlier test's namespace being deleted lists and deletes everything in it
            (the namespace controller): that must be over before the first reading."""
            listed = await core.list_namespace(
                label_selector="rmd.dev/test", _request_timeout=REQUEST_TIMEOUT
            )
            return all(item.status.phase != "Terminating" for item in listed.items)

        await eventually(no_namespace_terminating, what="earlier test namespaces gone", timeout=120)
        async with census(core, namespace, daemon.cluster_id) as watcher:
            job = JobClient(daemon.http, daemon.url, "economy")
            ours = await rmd_requests(daemon.http, daemon.url)
            counts, seconds = await lifecycle_counts(kube_api, job, watcher, count=LIFECYCLES)
            ours = await rmd_requests(daemon.http, daemon.url) - ours
    table = "\n".join(f"{kind}: {counts[kind]}" for kind in sorted(counts))
    table += f"\nrmd's own: {dict(ours)}"
    print(f"{LIFECYCLES} lifecycles in {seconds:.1f} s:\n{table}")

    def count(verb: str, resource: str) -> int:
        return counts[RequestKind(verb, resource)]

    n = LIFECYCLES
    # Exactly one create and one delete per TaskManager (rmd's own count); the API server
    # sees the node's final delete too (grace period 0, once the containers stopped, as a
    # kubelet sends it; none when the pod was gone by then).
    assert ours["create"] == n, table
    assert count("POST", "pods") == n, table
    assert ours["delete"] == n, table
    assert n <= count("DELETE", "pods") <= 2 * n, table
    assert ours["patch"] == count("PATCH", "pods"), table  # the label patches are rmd's
    # The rmd.dev/state label: registered, idle, releasing (pending comes with the create);
    # one more when a registration shows idle before its slot is allocated, one less when a
    # change is superseded before its patch goes out.
    assert 2 * n <= count("PATCH", "pods") <= 4 * n, table
    # The state ConfigMap: the declaration, the slot's assignment, the job's removal (which
    # stores the TaskManager's idle-since time), the TaskManager's removal — fewer when the
    # group commit takes two at once; never one per heartbeat (several per lifecycle here).
    # Its first write creates it.
    state_writes = count("POST", "configmaps") + count("PUT", "configmaps")
    assert n <= state_writes <= 4 * n, table
    assert count("GET", "configmaps") <= 1, table
    # Events: TaskManagerCreated, TaskManagerRegistered, IdleReleased (a write that fails
    # is dropped, not retried: at most these).
    assert n <= count("POST", "events") <= 3 * n, table
    # No polling: the one watch, no reads of single pods, no LIST (the resync is 5 min).
    assert count("GET", "pods") == 0, table
    assert count("LIST", "pods") == 0, table
    assert count("WATCH", "pods") <= 2, table  # watches (anybody's) that ended meanwhile
    expected = {
        "POST pods",
        "DELETE pods",
        "PATCH pods",
        "POST configmaps",
        "PUT configmaps",
        "GET configmaps",
        "POST events",
        "WATCH pods",
    }
    kinds = {str(kind) for kind in counts if kind.resource in ("pods", "configmaps", "events")}
    assert kinds <= expected, f"new kinds of requests: {sorted(kinds - expected)}\n{table}"
