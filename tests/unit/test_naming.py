from __future__ import annotations

import pytest

from rmd.core.allocator import Allocator
from rmd.core.naming import PodNameParts, parse_taskmanager_pod_name, taskmanager_pod_name


def test_name_follows_flinks_scheme() -> None:
    assert taskmanager_pod_name("flink-1", attempt=3, index=12) == "flink-1-taskmanager-3-12"


@pytest.mark.parametrize(("attempt", "index"), [(0, 1), (1, 0), (-1, 5)])
def test_attempt_and_index_start_at_one(attempt: int, index: int) -> None:
    with pytest.raises(ValueError, match="start at 1"):
        taskmanager_pod_name("flink", attempt=attempt, index=index)


def test_parse_round_trips() -> None:
    name = taskmanager_pod_name("my-cluster", attempt=7, index=250)
    assert parse_taskmanager_pod_name(name, "my-cluster") == PodNameParts(attempt=7, index=250)


@pytest.mark.parametrize(
    "name",
    [
        "other-taskmanager-1-1",  # another cluster
        "flink-jobmanager-1-1",
        "flink-taskmanager-1",  # no index
        "flink-taskmanager-1-",
        "flink-taskmanager--1",
        "flink-taskmanager-01-1",  # not how we write numbers
        "flink-taskmanager-1-x",
        "flink-taskmanager-1-1-1",
        "flink-taskmanager-\u0661-1",  # Arabic-Indic digit one
        "flink-taskmanager-1-\u00b2",  # superscript two
        "flink-taskmanager-1-1 ",
        "flink-x-taskmanager-1-1",
    ],
)
def test_foreign_names_are_not_ours(name: str) -> None:
    assert parse_taskmanager_pod_name(name, "flink") is None
    assert Allocator.attempt_of(name, "flink") is None


def test_cluster_id_prefix_of_another_cluster_is_not_confused() -> None:
    # Cluster "flink" must not claim the pods of cluster "flink-taskmanager-1".
    foreign = taskmanager_pod_name("flink-taskmanager-1", attempt=1, index=1)
    assert parse_taskmanager_pod_name(foreign, "flink") is None
    assert Allocator.attempt_of(foreign, "flink-taskmanager-1") == 1


def test_order_follows_numbers_not_text() -> None:
    assert PodNameParts(1, 2) < PodNameParts(1, 10) < PodNameParts(2, 1)
