"""The benchmark's code runs (tiny sizes): the heartbeat servers start, answer, and are
measured. Figures are not checked — they belong to ``make bench`` on a quiet machine."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from bench.__main__ import QUICK, table
from bench.api_economy import economy, economy_lines
from bench.heartbeats import measure, run_all
from bench.reaction import reaction, reaction_lines
from tests.conftest import DevClusterInfo


@pytest.mark.parametrize("kind", ["bare", "rmd"])
async def test_a_heartbeat_server_is_measured(kind: str) -> None:
    result = await measure(kind, taskmanagers=5, clients=2, seconds=0.5, warmup=0.1)
    assert result.kind == kind
    assert result.requests > 0
    assert result.errors == 0
    assert 0 < result.p50_ms <= result.p99_ms


async def test_heartbeats_over_the_channel_are_measured() -> None:
    report = await run_all(
        kinds=("bare-channel", "rmd-channel"), taskmanagers=20, clients=0, seconds=1.0, rates=(40,)
    )
    [row] = report["open"]
    for kind in ("bare-channel", "rmd-channel"):
        assert row[kind]["requests"] == 40
        assert row[kind]["errors"] == 0  # every channel's last frames were read (pings answered)
        # /proc counts CPU in clock ticks (10 ms): 40 cheap frames may cost less than one
        assert row[kind]["server_cpu_ms_per_request"] >= 0


def test_the_table_shows_every_part() -> None:
    row = {
        "requests_per_s": 1.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "server_cpu_percent": 3.0,
        "server_cpu_ms_per_request": 0.1,
    }
    report = {
        "profile": QUICK.name,
        "machine": {"cpus": 2, "cpu_model": "x", "memory_gb": 1, "load_average": [1, 1, 1]},
        "scale_out": [
            {
                "pods": 5,
                "parallel": 8,
                "ratio_all_exist": 1.1,
                "baseline": {"all_exist_s": 1.0},
                "rmd": {
                    "all_exist_s": 1.1,
                    "all_registered_s": 1.2,
                    "fulfilled_s": 1.3,
                    "cpu_percent": {"kube-apiserver": 50.0, "daemon": 10.0},
                    "cpu_percent_until_exist": {"kube-apiserver": 60.0, "daemon": 20.0},
                },
            }
        ],
        "idle": [
            {
                "taskmanagers": 5,
                "window_s": 30.0,
                "daemon_cpu_percent": 1.0,
                "rss_mb_start": 90.0,
                "rss_mb_end": 91.0,
                "rss_growth_mb": 1.0,
            }
        ],
        "heartbeats": {
            "bare": row,
            "rmd": row,
            "ratio_requests_per_s": 1.0,
            "ratio_p99": 1.0,
            "ratio_server_cpu_per_request": 1.0,
        },
    }
    figures = {"trials": 50, "p50_ms": 10.0, "p99_ms": 20.0, "mean_ms": 11.0, "max_ms": 20.0}
    report["reaction"] = {
        "trials": 50,
        "idle_timeout_s": 1.0,
        **{
            key: figures
            for key in (
                "declare_added",
                "declare_registered",
                "baseline_create_added",
                "replace_added",
                "replace_registered",
                "baseline_delete_create_added",
                "release_excess",
            )
        },
    }
    report["api_economy"] = {
        "lifecycles": 10,
        "seconds": 30.0,
        "per_lifecycle": {"POST pods": 1.0, "GET namespaces": 0.3},
        "quiet_same_length": {"GET namespaces": 3},
        "rmd_per_lifecycle": {"POST": 1.0, "DELETE": 1.0, "PATCH": 3.2},
    }
    text = table(report)
    assert "+1 slot -> pod ADDED" in text
    assert "bare create: 10.0 / 20.0" in text
    assert "POST pods" in text
    assert "GET namespaces" not in text  # the control plane's own, summed
    assert "every other row" in text
    assert "PATCH 3.2" in text  # the daemon's own count beside the API server's
    assert "    5 @ 8" in text
    assert "50/0/10; 60/0/20" in text  # CPU until fulfilled; until every pod exists
    assert "rmd / bare" in text
    assert "90->91" in text


@pytest.mark.integration
async def test_reaction_is_measured(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    result = await reaction(
        client.CoreV1Api(kube_api),
        kubeconfig=dev_cluster.kubeconfig,
        namespace=namespace,
        trials=2,
        pids={},
        log_dir=tmp_path,
    )
    figures = asdict(result)
    for key in ("declare_added", "replace_added", "release_excess", "baseline_create_added"):
        assert figures[key]["trials"] == 2
        assert 0 <= figures[key]["p50_ms"] <= figures[key]["p99_ms"], figures
    # registered comes after ADDED, in every trial's own timing: compare the largest
    assert figures["declare_registered"]["max_ms"] >= figures["declare_added"]["p50_ms"]
    assert "pod deleted -> new ADDED" in "\n".join(reaction_lines(figures))


@pytest.mark.integration
async def test_api_economy_is_measured(
    dev_cluster: DevClusterInfo, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    result = await economy(
        kube_api,
        kubeconfig=dev_cluster.kubeconfig,
        namespace=namespace,
        count=1,
        log_dir=tmp_path,
        idle_timeout=1.0,
    )
    assert result.per_lifecycle["POST pods"] == 1
    assert "POST pods" in "\n".join(economy_lines(asdict(result)))
