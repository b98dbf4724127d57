"""The tests' stand-in for Prometheus's Kubernetes pod discovery labels pods as it does."""

from __future__ import annotations

from tests.support.podsd import http_sd_groups

POD = {
    "metadata": {
        "name": "jm-1",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"app": "c1", "component": "jobmanager"},
        "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8090"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "c1-5d", "controller": True}],
    },
    "spec": {
        "nodeName": "node-1",
        "containers": [
            {
                "name": "main",
                "image": "flink",
                "ports": [
                    {"name": "rest", "containerPort": 8081},
                    {"name": "rmd", "containerPort": 8090, "protocol": "TCP"},
                ],
            },
            {"name": "sidecar", "image": "busybox"},
        ],
    },
    "status": {
        "podIP": "127.1.0.9",
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}


def test_a_target_per_container_port_and_a_bare_ip_for_a_container_without_ports() -> None:
    groups = http_sd_groups([POD])

    assert [group["targets"] for group in groups] == [
        ["127.1.0.9:8081"],
        ["127.1.0.9:8090"],
        ["127.1.0.9"],
    ]
    labels = groups[1]["labels"]
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert labels["__meta_kubernetes_pod_annotationpresent_prometheus_io_port"] == "true"
    assert labels["__meta_kubernetes_pod_label_component"] == "jobmanager"
    assert labels["__meta_kubernetes_pod_ip"] == "127.1.0.9"
    assert labels["__meta_kubernetes_namespace"] == "ns"
    assert labels["__meta_kubernetes_pod_ready"] == "true"
    assert labels["__meta_kubernetes_pod_controller_kind"] == "ReplicaSet"
    assert labels["__meta_kubernetes_pod_container_port_name"] == "rmd"
    assert labels["__meta_kubernetes_pod_container_port_number"] == "8090"
    assert "__meta_kubernetes_pod_container_port_number" not in groups[2]["labels"]


def test_a_pod_without_an_ip_is_no_target() -> None:
    assert http_sd_groups([{**POD, "status": {"phase": "Pending"}}]) == []
