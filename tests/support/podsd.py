"""Prometheus's Kubernetes pod discovery, served over Prometheus's HTTP service discovery.

Debian's ``prometheus`` package is built without Kubernetes service discovery (its patch
``01-Disable_kubernetes``: "completely removed, due to the insane amount of dependencies in
their client library"), and no other registry this project can use ships a Prometheus. So
the tests give the real Prometheus binary its targets through ``http_sd_configs`` from this
bridge, which LISTs the pods from the API server on every refresh and labels them exactly as
``kubernetes_sd_configs`` with ``role: pod`` does (same ``__meta_kubernetes_pod_*`` names,
one target per declared container port, a bare pod IP for a pod without ports), so the
relabelling a real cluster's Prometheus applies runs unchanged.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

from rmd.kube.listwatch import Json, ResourceQuery, list_objects
from rmd_dev.cluster import free_port

META = "__meta_kubernetes_"
_INVALID_LABEL_CHARACTERS = re.compile(r"[^a-zA-Z0-9_]")


def sanitize(name: str) -> str:
    """Prometheus's strutil.SanitizeLabelName: every character outside [a-zA-Z0-9_] → _."""
    return _INVALID_LABEL_CHARACTERS.sub("_", name)


def pod_target_group(pod: Json) -> dict[str, Any] | None:
    """One pod as the Kubernetes SD's pod role shows it; None before it has an IP."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    pod_ip = status.get("podIP")
    if not pod_ip:
        return None
    labels = {
        f"{META}namespace": metadata.get("namespace", ""),
        f"{META}pod_name": metadata.get("name", ""),
        f"{META}pod_ip": pod_ip,
        f"{META}pod_uid": metadata.get("uid", ""),
        f"{META}pod_node_name": spec.get("nodeName", ""),
        f"{META}pod_host_ip": status.get("hostIP", ""),
        f"{META}pod_phase": status.get("phase", ""),
        f"{META}pod_ready": _ready(status),
    }
    for kind, values in (
        ("label", metadata.get("labels") or {}),
        ("annotation", metadata.get("annotations") or {}),
    ):
        for key, value in values.items():
            labels[f"{META}pod_{kind}_{sanitize(key)}"] = str(value)
            labels[f"{META}pod_{kind}present_{sanitize(key)}"] = "true"
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("controller"):
            labels[f"{META}pod_controller_kind"] = owner.get("kind", "")
            labels[f"{META}pod_controller_name"] = owner.get("name", "")
    targets: list[dict[str, str]] = []
    for container in spec.get("containers") or []:
        container_labels = {
            f"{META}pod_container_name": container.get("name", ""),
            f"{META}pod_container_image": container.get("image", ""),
            f"{META}pod_container_init": "false",
        }
        ports = container.get("ports") or []
        if not ports:
            targets.append({"__address__": pod_ip, **container_labels})
        for port in ports:
            number = str(port.get("containerPort", ""))
            targets.append(
                {
                    "__address__": f"{pod_ip}:{number}",
                    **container_labels,
                    f"{META}pod_container_port_name": port.get("name", ""),
                    f"{META}pod_container_port_number": number,
                    f"{META}pod_container_port_protocol": port.get("protocol", "TCP"),
                }
            )
    # HTTP SD has one label set per group: every target becomes its own group.
    return {"targets": targets, "labels": labels}


def http_sd_groups(pods: list[Json]) -> list[dict[str, Any]]:
    """HTTP SD's answer: a group per target, the pod's labels merged into each target's."""
    groups: list[dict[str, Any]] = []
    for pod in pods:
        group = pod_target_group(pod)
        if group is None:
            continue
        for target in group["targets"]:
            address = target.pop("__address__")
            groups.append({"targets": [address], "labels": {**group["labels"], **target}})
    return groups


def _ready(status: Json) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return "true" if condition.get("status") == "True" else "false"
    return "unknown"


@contextlib.asynccontextmanager
async def pod_discovery(api: client.ApiClient, *, namespace: str) -> AsyncIterator[str]:
    """Serve the pods of ``namespace`` as HTTP SD until the block ends; yields its URL."""

    async def targets(request: web.Request) -> web.Response:
        pods, _version = await list_objects(
            api, ResourceQuery(namespace=namespace), timeout=(5.0, 30.0)
        )
        return web.json_response(http_sd_groups(pods))

    app = web.Application()
    app.router.add_get("/pods", targets)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/pods"
    finally:
        await runner.cleanup()
