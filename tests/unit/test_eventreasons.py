"""Which notices become which Kubernetes Events (pure)."""

from __future__ import annotations

import pytest

from rmd.core.model import (
    LossReason,
    Notice,
    PodProblem,
    RecoveryCompleted,
    RecoveryFigures,
    ReleaseReason,
    SlotsFreed,
    StartFailure,
    StartsThrottled,
    TaskManagerChanged,
    TaskManagerLost,
    TaskManagerRegistered,
    TaskManagerState,
)
from rmd.kube.eventcorrelation import InvolvedObject
from rmd.kube.eventreasons import created_event, notice_events

IDLE = ReleaseReason.IDLE.value
DEPLOYMENT = InvolvedObject("Deployment", "flink", "d-uid", api_version="apps/v1")


def pod(name: str) -> InvolvedObject:
    return InvolvedObject("Pod", name, f"uid-{name}")


@pytest.mark.parametrize(
    ("notice", "expected"),
    [
        (TaskManagerRegistered("p", startup_seconds=2.25), ("TaskManagerRegistered", "Normal")),
        (
            TaskManagerChanged("p", TaskManagerState.REGISTERED, TaskManagerState.RELEASING, IDLE),
            ("IdleReleased", "Normal"),
        ),
        (
            TaskManagerLost("p", LossReason.REGISTRATION_TIMEOUT, was_registered=False),
            ("RegistrationTimedOut", "Warning"),
        ),
        (
            TaskManagerLost("p", LossReason.HEARTBEAT_TIMEOUT, True, ("j1", "j2")),
            ("TaskManagerLost", "Warning"),
        ),
        (PodProblem("p", "Unschedulable", "0/3 nodes"), ("Unschedulable", "Warning")),
        (PodProblem("p", "ImagePullBackOff", "back-off"), ("ImagePullFailed", "Warning")),
        (PodProblem("p", "CrashLoopBackOff", ""), ("ContainerNotStarting", "Warning")),
    ],
)
def test_pod_events(notice: Notice, expected: tuple[str, str]) -> None:
    (event,) = notice_events(notice, pod=pod, deployment=DEPLOYMENT)
    assert (event.reason, event.type) == expected
    assert event.involved == pod("p")


def test_a_lost_taskmanager_names_its_jobs() -> None:
    notice = TaskManagerLost("p", LossReason.HEARTBEAT_TIMEOUT, True, ("j1", "j2"))
    (event,) = notice_events(notice, pod=pod, deployment=DEPLOYMENT)
    assert "heartbeat-timeout" in event.message
    assert "job(s) j1, j2" in event.message


def test_job_level_events_name_the_deployment_and_no_pod() -> None:
    failures = [
        notice_events(StartFailure(f"p{n}", "exit code 1"), pod=pod, deployment=DEPLOYMENT)
        for n in range(3)
    ]
    assert len({event.message for (event,) in failures}) == 1  # a crash loop is one series
    (event,) = failures[0]
    assert (event.involved, event.reason, event.type) == (
        DEPLOYMENT,
        "TaskManagerStartFailed",
        "Warning",
    )
    (throttled,) = notice_events(
        StartsThrottled(failures_in_window=10, until=0.0), pod=pod, deployment=DEPLOYMENT
    )
    assert throttled.reason == "StartsThrottled"
    assert notice_events(StartFailure("p", "x"), pod=pod, deployment=None) == []


def test_a_settled_recovery_is_one_event_on_the_deployment() -> None:
    figures = RecoveryFigures(
        jobs_restored=3,
        slots_declared=12,
        slots_reserved=10,
        adopted=5,
        deleted=1,
        reregistered=4,
        not_reregistered=1,
    )
    notice = RecoveryCompleted(figures=figures, seconds=2.5)
    (event,) = notice_events(notice, pod=pod, deployment=DEPLOYMENT)
    assert (event.involved, event.reason, event.type) == (DEPLOYMENT, "Recovered", "Normal")
    assert "3 jobs restored, 5 TaskManager pods adopted (4 registered again, 1 lost)" in (
        event.message
    )
    assert notice_events(notice, pod=pod, deployment=None) == []


def test_other_notices_and_changes_are_no_events() -> None:
    quiet: list[Notice] = [
        SlotsFreed("j", ("p/0",), "job removed"),
        TaskManagerChanged("p", None, TaskManagerState.REQUESTED, "slot demand"),
        TaskManagerChanged(
            "p", TaskManagerState.PENDING, TaskManagerState.RELEASING, ReleaseReason.EXCESS
        ),
    ]
    assert [notice_events(n, pod=pod, deployment=DEPLOYMENT) for n in quiet] == [[], [], []]


def test_created_names_at_most_five_waiting_jobs() -> None:
    event = created_event(pod("p"), waiting_jobs=[f"j{n}" for n in range(8)])
    assert event.reason == "TaskManagerCreated"
    assert "j0, j1, j2, j3, j4 and 3 more" in event.message
    spare = created_event(pod("p"), waiting_jobs=[])
    assert "warm spare" in spare.message
