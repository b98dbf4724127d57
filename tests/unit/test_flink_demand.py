"""A Flink job's slot demand, what to declare and remove, which TaskManagers Flink uses."""

from __future__ import annotations

import pytest

from rmd.flink.answers import (
    JobSummary,
    JobVertex,
    TaskManagerUsage,
    parse_job_details,
    parse_resource_requirements,
    parse_taskmanager_details,
    parse_taskmanagers,
)
from rmd.flink.demand import (
    FollowPlan,
    ProblemReason,
    RequirementsSource,
    cap_problem,
    plan_follow,
    requirements_source,
    slots_needed,
)
from rmd.flink.usage import needs_details, usage_report
from tests.support.fake_flink import golden
from tests.unit.test_flink_answers import ADAPTIVE, ONE_GROUP, TASKMANAGER, TWO_GROUPS, WAITING

# ---------------------------------------------------------------------------- demand


@pytest.mark.parametrize(
    ("name", "job_id", "slots"),
    [
        ("job-one-slot-sharing-group", ONE_GROUP, 2),  # parallelism 2, one group
        ("job-two-slot-sharing-groups", TWO_GROUPS, 2),  # 1 + a sink group at 1
        ("job-waiting-for-slots", WAITING, 3),
        ("adaptive-job", ADAPTIVE, 4),  # vertices at 2, two groups
    ],
)
def test_default_scheduler_demand_of_recorded_jobs(name: str, job_id: str, slots: int) -> None:
    assert slots_needed(parse_job_details(golden(name), job_id=job_id).vertices) == slots


def test_adaptive_demand_is_the_upper_bounds_per_group() -> None:
    vertices = parse_job_details(golden("adaptive-job-rescale-waiting"), job_id=ADAPTIVE).vertices
    before = parse_resource_requirements(golden("adaptive-resource-requirements"), job_id=ADAPTIVE)
    after = parse_resource_requirements(
        golden("adaptive-resource-requirements-rescaled"), job_id=ADAPTIVE
    )
    assert {v.parallelism for v in vertices} == {2}  # still running at 2 while it waits
    assert slots_needed(vertices, before) == 4
    assert slots_needed(vertices, after) == 6


def test_groups_take_their_largest_vertex_and_add_up() -> None:
    vertices = [
        JobVertex("a", 4, "g1"),
        JobVertex("b", 1, "g1"),
        JobVertex("c", 3, "g2"),
        JobVertex("d", 2, "g2"),
    ]
    assert slots_needed(vertices) == 7


def test_vertices_without_a_group_id_share_one_group() -> None:  # Flink 1.x answers
    assert slots_needed([JobVertex("a", 2, None), JobVertex("b", 5, None)]) == 5


def test_undecided_vertices_do_not_count() -> None:
    assert slots_needed([JobVertex("a", None, "g1"), JobVertex("b", 3, "g2")]) == 3


def test_a_vertex_without_a_bound_counts_with_its_parallelism() -> None:
    bounds = parse_resource_requirements(
        {"a": {"parallelism": {"lowerBound": 1, "upperBound": 6}}}, job_id=ADAPTIVE
    )
    assert slots_needed([JobVertex("a", 2, "g1"), JobVertex("b", 3, "g2")], bounds) == 9


@pytest.mark.parametrize(
    ("scheduler", "source"),
    [
        ("Default", RequirementsSource.VERTICES),
        ("AdaptiveBatch", RequirementsSource.VERTICES),
        ("Adaptive", RequirementsSource.RESOURCE_REQUIREMENTS),
        (None, RequirementsSource.PROBE),
        ("SomethingNew", RequirementsSource.VERTICES),
    ],
)
def test_requirements_source(scheduler: str | None, source: RequirementsSource) -> None:
    assert requirements_source(scheduler) is source


def test_demand_above_the_slot_cap_is_a_problem_that_says_what_to_do() -> None:
    assert cap_problem("j", 8, max_slots=None) is None
    assert cap_problem("j", 8, max_slots=8) is None
    problem = cap_problem("j", 9, max_slots=8)
    assert problem is not None
    assert problem.reason is ProblemReason.ABOVE_SLOT_CAP
    assert "needs 9 slots" in problem.detail
    assert "lower its parallelism or raise slotmanager.number-of-slots.max" in problem.detail


# ---------------------------------------------------------------------------- plan


def running(job_id: str) -> JobSummary:
    return JobSummary(job_id, "RUNNING", "Default")


def test_a_new_job_is_declared() -> None:
    plan = plan_follow(followed={}, jobs=[running("a")], demands={"a": 2})
    assert plan == FollowPlan(declare={"a": 2})


def test_the_same_demand_again_is_no_change() -> None:
    assert not plan_follow(followed={"a": 2}, jobs=[running("a")], demands={"a": 2})


def test_a_rescaled_job_is_declared_again() -> None:
    plan = plan_follow(followed={"a": 2}, jobs=[running("a")], demands={"a": 6})
    assert plan == FollowPlan(declare={"a": 6})


def test_a_live_job_without_demand_this_time_keeps_its_declaration() -> None:
    assert not plan_follow(followed={"a": 2}, jobs=[running("a")], demands={})


@pytest.mark.parametrize("state", ["FINISHED", "FAILED", "CANCELED", "SUSPENDED"])
def test_terminal_jobs_are_removed(state: str) -> None:
    plan = plan_follow(
        followed={"a": 2, "b": 2},
        jobs=[JobSummary("a", state, "Default"), running("b")],
        demands={"b": 2},
    )
    assert plan == FollowPlan(remove={"a": f"job {state}"})


@pytest.mark.parametrize("state", ["CANCELLING", "FAILING", "RESTARTING", "INITIALIZING"])
def test_jobs_on_their_way_keep_their_demand(state: str) -> None:
    plan = plan_follow(
        followed={"a": 2}, jobs=[JobSummary("a", state, "Default")], demands={"a": 2}
    )
    assert not plan


def test_terminal_jobs_never_followed_are_left_alone() -> None:
    assert not plan_follow(followed={}, jobs=[JobSummary("a", "FINISHED", None)], demands={})


def test_a_followed_job_that_left_the_overview_is_removed() -> None:
    plan = plan_follow(followed={"a": 2}, jobs=[], demands={})
    assert plan == FollowPlan(remove={"a": "job no longer listed by Flink"})


# ---------------------------------------------------------------------------- usage


def test_usage_from_the_recorded_answers() -> None:
    [busy_listed] = parse_taskmanagers(golden("taskmanagers"))
    [free_listed] = parse_taskmanagers(golden("taskmanagers-idle"))
    idle = parse_taskmanager_details(
        golden("taskmanager-idle-after-jobs"), taskmanager_id=TASKMANAGER
    )
    assert needs_details([busy_listed], ours=[TASKMANAGER]) == []
    assert needs_details([free_listed], ours=[TASKMANAGER]) == [TASKMANAGER]
    assert needs_details([free_listed], ours=[]) == []
    assert usage_report([busy_listed], {}) == {TASKMANAGER: True}
    assert usage_report([free_listed], {TASKMANAGER: idle}) == {TASKMANAGER: False}


def test_a_taskmanager_whose_details_could_not_be_read_is_left_out() -> None:
    listed = [
        TaskManagerUsage("a", slots_total=2, slots_free=2),
        TaskManagerUsage("b", slots_total=2, slots_free=1),
    ]
    assert usage_report(listed, {}) == {"b": True}
