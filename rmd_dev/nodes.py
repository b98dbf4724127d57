"""Fake Node objects for the local control plane: Ready, schedulable, with allocatable resources.

There is no kubelet, so nothing reports node status; the node-lifecycle controller is off,
so nothing marks these nodes NotReady either. The node emulator plays the kubelet for the
pods the real scheduler binds to them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

DEFAULT_CAPACITY: Mapping[str, str] = {"cpu": "16", "memory": "64Gi", "pods": "110"}
REQUEST_TIMEOUT = (5, 30)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node_status(capacity: Mapping[str, str]) -> dict[str, Any]:
    now = _now()
    return {
        "capacity": dict(capacity),
        "allocatable": dict(capacity),
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "rmd node emulator is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            },
            *(
                {
                    "type": cond,
                    "status": "False",
                    "reason": f"KubeletHas{reason}",
                    "message": "emulated",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
                for cond, reason in (
                    ("MemoryPressure", "SufficientMemory"),
                    ("DiskPressure", "NoDiskPressure"),
                    ("PIDPressure", "SufficientPID"),
                )
            ),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "nodeInfo": {
            "kubeletVersion": "v1.20.2-rmd-emulator",
            "kubeProxyVersion": "v1.20.2-rmd-emulator",
            "containerRuntimeVersion": "rmd-emulator://1",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "osImage": "rmd node emulator",
            "kernelVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


async def ensure_node(
    core: client.CoreV1Api,
    name: str,
    *,
    capacity: Mapping[str, str] = DEFAULT_CAPACITY,
    labels: Mapping[str, str] | None = None,
) -> None:
    """Create (or keep) the Node ``name`` and make it Ready with ``capacity``."""
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "rmd.dev/emulated": "true",
        **(labels or {}),
    }
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels},
    }
    try:
        await core.create_node(body=body, _request_timeout=REQUEST_TIMEOUT)  # type: ignore[arg-type]
    except ApiException as exc:
        if exc.status != 409:
            raise
        await core.patch_node(
            name, body={"metadata": {"labels": node_labels}}, _request_timeout=REQUEST_TIMEOUT
        )
    await core.patch_node_status(
        name, body={"status": node_status(capacity)}, _request_timeout=REQUEST_TIMEOUT
    )
    # The API server gives every new node a node.kubernetes.io/not-ready taint; the
    # node-lifecycle controller would lift it once Ready, but it is off (no kubelet heartbeats).
    await core.patch_node(name, body={"spec": {"taints": None}}, _request_timeout=REQUEST_TIMEOUT)


async def set_node_capacity(
    core: client.CoreV1Api, names: Sequence[str], *, capacity: Mapping[str, str]
) -> None:
    """Change what the scheduler thinks the nodes can hold (e.g. ``{"pods": "0"}`` = full)."""
    merged = {**DEFAULT_CAPACITY, **capacity}
    for name in names:
        await core.patch_node_status(
            name,
            body={"status": {"capacity": merged, "allocatable": merged}},
            _request_timeout=REQUEST_TIMEOUT,
        )


async def wait_default_service_account(
    core: client.CoreV1Api, *, namespace: str = "default", timeout: float = 60.0
) -> None:
    """Pods can be created only once the namespace's ``default`` service account exists."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await core.read_namespaced_service_account(
                "default", namespace, _request_timeout=REQUEST_TIMEOUT
            )
            return
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def setup_cluster(*, kubeconfig: Path, node_names: Sequence[str]) -> None:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        core = client.CoreV1Api(api)
        for name in node_names:
            await ensure_node(core, name)
        await wait_default_service_account(core)
