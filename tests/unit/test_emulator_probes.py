"""Readiness probes in the node emulator: read as the kubelet reads them, counted as its
prober worker counts them, and shown in the pod status."""

from __future__ import annotations

from typing import Any

import pytest

from rmd_dev.emulator.probes import ProbeError, ProbeResults, readiness_probe
from rmd_dev.emulator.status import Running, build_pod_status

T0 = 1_700_000_000.0


def container(probe: dict[str, Any] | None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": "main",
        "image": "img:1",
        "ports": [{"name": "rest", "containerPort": 8081}],
    }
    if probe is not None:
        found["readinessProbe"] = probe
    return found


def test_an_http_probe_on_a_named_port_goes_to_the_pod_ip_with_its_timing() -> None:
    spec = readiness_probe(
        container(
            {
                "httpGet": {
                    "path": "config",
                    "port": "rest",
                    "httpHeaders": [{"name": "X-A", "value": "1"}],
                },
                "initialDelaySeconds": 2,
                "periodSeconds": 3,
                "timeoutSeconds": 4,
                "successThreshold": 2,
                "failureThreshold": 5,
            }
        ),
        pod_ip="127.1.0.7",
    )
    assert spec is not None
    assert spec.url == "http://127.1.0.7:8081/config"
    assert spec.headers == (("X-A", "1"),)
    assert (spec.initial_delay, spec.period, spec.timeout) == (2.0, 3.0, 4.0)
    assert (spec.success_threshold, spec.failure_threshold) == (2, 5)


def test_a_tcp_probe_takes_its_host_and_the_api_servers_defaults() -> None:
    spec = readiness_probe(
        container({"tcpSocket": {"port": 6123, "host": "127.0.0.1"}}), pod_ip="127.1.0.7"
    )
    assert spec is not None
    assert (spec.kind, spec.host, spec.port) == ("tcp", "127.0.0.1", 6123)
    assert (spec.period, spec.timeout, spec.success_threshold, spec.failure_threshold) == (
        10.0,
        1.0,
        1,
        3,
    )


def test_no_probe_is_none_and_a_probe_that_cannot_run_says_why() -> None:
    assert readiness_probe(container(None), pod_ip="127.1.0.7") is None
    with pytest.raises(ProbeError, match="exec probe is not run"):
        readiness_probe(container({"exec": {"command": ["true"]}}), pod_ip="127.1.0.7")
    with pytest.raises(ProbeError, match="'web' is not one of the container's named ports"):
        readiness_probe(container({"httpGet": {"port": "web"}}), pod_ip="127.1.0.7")


def test_readiness_starts_false_and_flips_only_after_the_thresholds_in_a_row() -> None:
    results = ProbeResults(success_threshold=2, failure_threshold=3)
    assert not results.ready
    assert [results.record(ok) for ok in (True, False, True)] == [False, False, False]
    assert results.record(True)
    assert results.ready
    assert [results.record(ok) for ok in (False, False, True, False, False)] == [False] * 5
    assert results.ready  # never three failures in a row
    assert results.record(False)
    assert not results.ready
    assert not results.record(False)


def test_a_first_failure_keeps_an_unready_container_unready_and_one_success_makes_it_ready() -> (
    None
):
    results = ProbeResults(success_threshold=1, failure_threshold=3)
    assert not results.record(False)
    assert results.record(True)
    assert results.ready


def test_the_status_shows_a_running_container_whose_probe_fails_as_not_ready() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"containers": [container(None), {"name": "side", "image": "img:2"}]},
        "status": {},
    }
    status = build_pod_status(
        pod,
        init_states=[],
        container_states=[Running(T0), Running(T0)],
        pod_ip="127.1.0.7",
        start_time=T0,
        now=T0 + 1,
        probe_ready=[False, True],
    )
    assert status["phase"] == "Running"
    assert [c["ready"] for c in status["containerStatuses"]] == [False, True]
    assert [c["started"] for c in status["containerStatuses"]] == [True, True]
    ready = {c["type"]: c for c in status["conditions"]}
    assert ready["Ready"]["status"] == "False"
    assert ready["Ready"]["reason"] == "ContainersNotReady"
    assert ready["ContainersReady"]["message"] == "containers with unready status: [main]"
    now_ready = build_pod_status(
        {**pod, "status": status},
        init_states=[],
        container_states=[Running(T0), Running(T0)],
        pod_ip="127.1.0.7",
        start_time=T0,
        now=T0 + 5,
        probe_ready=[True, True],
    )
    conditions = {c["type"]: c for c in now_ready["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["lastTransitionTime"] != ready["Ready"]["lastTransitionTime"]
