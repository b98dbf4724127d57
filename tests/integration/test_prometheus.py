"""Prometheus, really: promtool passes the daemon's real /metrics, and a real Prometheus
(Debian's binary) with the shipped scrape job finds the daemon through the JobManager pod's
scrape annotations, as listed by the API server, scrapes it at the pod IP, and answers
PromQL about its slots. (Debian builds Prometheus without Kubernetes SD: the pods reach it
through HTTP SD from tests/support/podsd.py, labelled as the Kubernetes SD labels them.)

The daemon runs as a process (in the test's loop, ``running_daemon``) bound to the IP of a
JobManager pod object that the node emulator runs: the pod's metadata (labels, scrape
annotations) is what ``rmd session start`` would create, its IP a 127.1.x.y loopback address
the emulator assigned — the address Prometheus reads from the API server and scrapes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from rmd.session.cli import start_plan
from rmd_dev.cluster import free_port
from tests.conftest import REQUEST_TIMEOUT, DevClusterInfo, manifest
from tests.integration.daemon_harness import metrics_after_a_job, running_daemon
from tests.support.podsd import pod_discovery
from tests.support.prometheus import promtool_check_metrics, running_prometheus
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

SCRAPE_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "prometheus" / "scrape-rmd.yaml"
NEW_METRICS = (
    "rmd_task_slots",
    "rmd_jobs_waiting",
    "rmd_job_oldest_wait_seconds",
    "rmd_pending_taskmanagers",
    "rmd_watch_relists_total",
    "rmd_kubernetes_api_request_duration_seconds_bucket",
)


async def test_promtool_passes_a_real_scrape(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    exposition = await metrics_after_a_job(
        dev_cluster=dev_cluster, kube_api=kube_api, namespace=namespace
    )

    check = promtool_check_metrics(exposition)

    assert (check.returncode, check.stdout + check.stderr) == (0, "")
    for name in NEW_METRICS:
        assert f"\n{name}" in exposition, name
    assert (
        'rmd_kubernetes_api_request_duration_seconds_count{result="success",verb="create"} 1.0'
        in (exposition)
    )


def test_promtool_flags_what_it_should() -> None:
    """The check above can fail: a gauge named like a counter is refused."""
    check = promtool_check_metrics("# HELP x_total A gauge.\n# TYPE x_total gauge\nx_total 1\n")

    assert check.returncode != 0
    assert 'non-counter metrics should not have "_total" suffix' in check.stdout + check.stderr


def discovery_config(*, sd_url: str) -> dict[str, Any]:
    """The shipped scrape job (conf/prometheus/scrape-rmd.yaml) with its relabelling as it is;
    its targets come from the HTTP SD bridge (tests/support/podsd.py: Debian's Prometheus has
    no Kubernetes SD) instead of ``kubernetes_sd_configs``, with the same meta labels."""
    shipped = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    [job] = shipped["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    del job["kubernetes_sd_configs"]
    job["http_sd_configs"] = [{"url": sd_url, "refresh_interval": "1s"}]
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [job],
    }


async def jobmanager_pod(
    core: client.CoreV1Api, *, namespace: str, cluster_id: str, port: int
) -> tuple[str, str]:
    """A JobManager pod whose metadata is the session Deployment's pod template (scrape
    annotations included) and that the emulator just runs (no process); (name, pod IP)."""
    conf_dir = Path(tempfile.mkdtemp(prefix="rmd-conf-"))
    plan = start_plan(
        conf_dir,
        [
            f"kubernetes.cluster-id={cluster_id}",
            f"kubernetes.namespace={namespace}",
            f"rmd.rest.port={port}",
        ],
    )
    metadata = plan.deployment["spec"]["template"]["metadata"]
    assert metadata["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    name = f"{cluster_id}-jobmanager"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": {"containers": [{"name": "flink-main-container", "image": "rmd:dev"}]},
    }
    await core.create_namespaced_pod(namespace, manifest(pod), _request_timeout=REQUEST_TIMEOUT)
    found: dict[str, str] = {}

    async def running_with_ip() -> bool:
        read = await core.read_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        if read.status.phase == "Running" and read.status.pod_ip:
            found["ip"] = read.status.pod_ip
            return True
        return False

    await eventually(running_with_ip, timeout=60, what="the JobManager pod Running with an IP")
    return name, found["ip"]


async def test_prometheus_discovers_the_daemon_by_its_pod_annotations_and_scrapes_it(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube_api)
    cluster_id = "prom-1"
    port = free_port()
    pod_name, pod_ip = await jobmanager_pod(
        core, namespace=namespace, cluster_id=cluster_id, port=port
    )
    assert pod_ip.startswith("127.1.")

    async with (
        pod_discovery(kube_api, namespace=namespace) as sd_url,
        running_daemon(
            dev_cluster=dev_cluster,
            kube_api=kube_api,
            namespace=namespace,
            cluster_id=cluster_id,
            address=pod_ip,
            port=port,
        ) as daemon,
        running_prometheus(
            discovery_config(sd_url=sd_url), workdir=tmp_path / "prometheus"
        ) as prometheus,
    ):
        await daemon.put_requirement("wordcount", 6)  # two TaskManagers of 4 slots
        await daemon.wait_fulfilled("wordcount")
        selector = f'{{namespace="{namespace}",pod="{pod_name}"}}'
        seen: dict[str, list[dict[str, Any]]] = {}

        async def slots_scraped() -> bool:
            total = await prometheus.query(f"rmd_task_slots{selector}")
            available = await prometheus.query(f"rmd_task_slots_available{selector}")
            seen["total"], seen["available"] = total, available
            return [s["value"][1] for s in total] == ["8"] and [
                s["value"][1] for s in available
            ] == ["2"]

        await eventually(slots_scraped, timeout=60, interval=0.5, what="the slot gauges in PromQL")
        [target] = [
            t for t in await prometheus.active_targets() if t["labels"].get("pod") == pod_name
        ]
        demand = await prometheus.query(f"sum(rmd_pending_slot_demand{selector})")

    assert target["health"] == "up"
    assert target["scrapeUrl"] == f"http://{pod_ip}:{port}/metrics"
    assert target["labels"]["job"] == "rmd"
    assert seen["total"][0]["metric"]["instance"] == f"{pod_ip}:{port}"
    assert [sample["value"][1] for sample in demand] == ["0"]


async def test_the_daemon_is_reachable_only_at_its_pod_ip(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    """What the scrape above relies on: the daemon bound to the pod IP answers there."""
    core = client.CoreV1Api(kube_api)
    port = free_port()
    _name, pod_ip = await jobmanager_pod(core, namespace=namespace, cluster_id="prom-2", port=port)
    async with running_daemon(
        dev_cluster=dev_cluster,
        kube_api=kube_api,
        namespace=namespace,
        cluster_id="prom-2",
        address=pod_ip,
        port=port,
    ) as daemon:
        assert daemon.url == f"http://{pod_ip}:{port}"
        assert "rmd_task_slots 0.0" in await daemon.metrics()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with daemon.http.get(f"http://127.0.0.1:{port}/metrics"):
                pass
