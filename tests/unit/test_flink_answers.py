"""Parsing Flink's REST answers: the recorded Flink 2.3.0 answers, and malformed ones."""

from __future__ import annotations

from typing import Any

import pytest

from rmd.flink.answers import (
    JobSummary,
    MalformedAnswer,
    ParallelismBounds,
    TaskManagerUsage,
    parse_job_details,
    parse_jobs_overview,
    parse_resource_requirements,
    parse_taskmanager_details,
    parse_taskmanagers,
    scheduler_refuses_requirements,
)
from tests.support.fake_flink import golden

ONE_GROUP = "5e3ceb889422448b1d3de033ef6943ef"
TWO_GROUPS = "1e920e02611d98b5c35e563226ae5e12"
WAITING = "e3d8999db9daf69ff74b8277f0935a8a"
ADAPTIVE = "f417ae389c4a00556f60b23792de537d"
TASKMANAGER = "demo-taskmanager-1-1"


def test_jobs_overview() -> None:
    assert parse_jobs_overview(golden("jobs-overview-terminal")) == [
        JobSummary("0dd5b52b79e6e4f96eaaf6f652bf6c6f", "FINISHED", "Default"),
        JobSummary(WAITING, "CANCELED", "Default"),
        JobSummary(TWO_GROUPS, "CANCELED", "Default"),
        JobSummary("04c983156563d51ea94f39cf93fcca6d", "CANCELED", "Default"),
        JobSummary(ONE_GROUP, "RUNNING", "Default"),
    ]
    assert parse_jobs_overview(golden("adaptive-jobs-overview")) == [
        JobSummary(ADAPTIVE, "RUNNING", "Adaptive")
    ]


def test_job_with_one_slot_sharing_group() -> None:
    details = parse_job_details(golden("job-one-slot-sharing-group"), job_id=ONE_GROUP)
    assert details.state == "RUNNING"
    assert details.scheduler == "Default"
    assert [(v.parallelism, v.slot_sharing_group) for v in details.vertices] == [
        (2, "ee654595ad0f8d343dff38147dced0af"),
        (2, "ee654595ad0f8d343dff38147dced0af"),
    ]


def test_job_with_two_slot_sharing_groups() -> None:
    details = parse_job_details(golden("job-two-slot-sharing-groups"), job_id=TWO_GROUPS)
    groups = [v.slot_sharing_group for v in details.vertices]
    assert len(details.vertices) == 3
    assert groups[0] == groups[1] != groups[2]


def test_job_waiting_for_slots_is_running_with_its_full_parallelism() -> None:
    details = parse_job_details(golden("job-waiting-for-slots"), job_id=WAITING)
    assert details.state == "RUNNING"
    assert {v.parallelism for v in details.vertices} == {3}


def test_a_details_answer_for_another_job_is_malformed() -> None:
    with pytest.raises(MalformedAnswer, match="jid is '5e3ceb88"):
        parse_job_details(golden("job-one-slot-sharing-group"), job_id=TWO_GROUPS)


def test_undecided_parallelism_reads_as_none() -> None:
    body = golden("job-one-slot-sharing-group")
    body["vertices"][1]["parallelism"] = -1  # the adaptive batch scheduler has not decided
    details = parse_job_details(body, job_id=ONE_GROUP)
    assert [v.parallelism for v in details.vertices] == [2, None]


def test_adaptive_resource_requirements() -> None:
    assert parse_resource_requirements(
        golden("adaptive-resource-requirements-rescaled"), job_id=ADAPTIVE
    ) == {
        "0a448493b4782967b150582570326227": ParallelismBounds(lower=1, upper=3),
        "ea632d67b7d595e5b851708ae9ad79d6": ParallelismBounds(lower=1, upper=3),
        "bc764cd8ddf7a0cff126f51c16239658": ParallelismBounds(lower=1, upper=3),
    }


def test_default_scheduler_refuses_resource_requirements() -> None:
    refused = golden("resource-requirements-default-scheduler-500")
    assert scheduler_refuses_requirements(500, refused)
    assert not scheduler_refuses_requirements(500, golden("taskmanager-unknown-500"))
    assert not scheduler_refuses_requirements(200, refused)
    assert not scheduler_refuses_requirements(500, "Internal server error")


def test_taskmanager_list_tells_busy_but_not_idle() -> None:
    [busy] = parse_taskmanagers(golden("taskmanagers"))
    [all_free] = parse_taskmanagers(golden("taskmanagers-idle"))
    assert busy == TaskManagerUsage(TASKMANAGER, slots_total=4, slots_free=0)
    assert busy.busy is True
    assert all_free.busy is None  # only the details can tell


def test_taskmanager_details_tell_busy_and_idle() -> None:
    busy = parse_taskmanager_details(golden("taskmanager-busy"), taskmanager_id=TASKMANAGER)
    idle = parse_taskmanager_details(
        golden("taskmanager-idle-after-jobs"), taskmanager_id=TASKMANAGER
    )
    assert busy.allocated_jobs == (ONE_GROUP, ONE_GROUP, TWO_GROUPS, TWO_GROUPS)
    assert busy.busy is True
    assert idle.allocated_jobs == ()
    assert idle.busy is False


def test_allocated_slots_make_a_taskmanager_busy_even_when_all_slots_read_free() -> None:
    body = golden("taskmanager-busy")
    body["freeSlots"] = body["slotsNumber"]
    usage = parse_taskmanager_details(body, taskmanager_id=TASKMANAGER)
    assert usage.busy is True


def _without(body: dict[str, Any], *path: str | int) -> dict[str, Any]:
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


@pytest.mark.parametrize(
    ("parse", "body", "message"),
    [
        (parse_jobs_overview, [], "the answer is a JSON list, expected a JSON object"),
        (parse_jobs_overview, {"jobs": "x"}, "jobs is the string 'x', expected a list"),
        (
            parse_jobs_overview,
            _without(golden("jobs-overview"), "jobs", 1, "state"),
            "jobs[1].state is missing, expected a string",
        ),
        (
            lambda body: parse_job_details(body, job_id=ONE_GROUP),
            _without(golden("job-one-slot-sharing-group"), "vertices", 0, "parallelism"),
            "vertices[0].parallelism is missing, expected an integer",
        ),
        (
            lambda body: parse_job_details(body, job_id=ONE_GROUP),
            {**golden("job-one-slot-sharing-group"), "vertices": [{"id": "v", "parallelism": 0}]},
            "vertices[0].parallelism is 0, expected -1 or at least 1",
        ),
        (
            lambda body: parse_resource_requirements(body, job_id=ADAPTIVE),
            {"v1": {"parallelism": {"lowerBound": 2, "upperBound": 1}}},
            "v1.parallelism.upperBound is 1, expected at least 2",
        ),
        (
            lambda body: parse_resource_requirements(body, job_id=ADAPTIVE),
            {"v1": {"parallelism": {"lowerBound": 1, "upperBound": True}}},
            "v1.parallelism.upperBound is the boolean true, expected an integer",
        ),
        (
            parse_taskmanagers,
            {"taskmanagers": [{"id": "t", "slotsNumber": 2, "freeSlots": 3}]},
            "taskmanagers[0] has freeSlots 3 > slotsNumber 2",
        ),
        (
            lambda body: parse_taskmanager_details(body, taskmanager_id=TASKMANAGER),
            _without(golden("taskmanager-busy"), "allocatedSlots"),
            "allocatedSlots is missing, expected a list",
        ),
    ],
)
def test_malformed_answers_name_the_endpoint_and_the_field(
    parse: Any, body: object, message: str
) -> None:
    with pytest.raises(MalformedAnswer) as raised:
        parse(body)
    assert raised.value.problem == message
    assert str(raised.value).startswith("Flink's answer to GET /")
