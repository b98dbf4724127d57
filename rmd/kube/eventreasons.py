"""Which of the core's notices become Kubernetes Events, with which reason and words (pure).

| reason | type | object | when |
|---|---|---|---|
| TaskManagerCreated | Normal | pod | its create was answered (names the jobs waiting for slots) |
| TaskManagerRegistered | Normal | pod | its TaskManager registered |
| RegistrationTimedOut | Warning | pod | it did not register within the registration timeout |
| IdleReleased | Normal | pod | idle past the idle timeout: rmd deletes it |
| TaskManagerLost | Warning | pod | lost without rmd asking (deleted, failed, no heartbeat) |
| Unschedulable | Warning | pod | the scheduler cannot place it |
| ImagePullFailed | Warning | pod | its image cannot be pulled |
| ContainerNotStarting | Warning | pod | another waiting reason a person must fix |
| TaskManagerStartFailed | Warning | Deployment | a pod failed to start (a crash loop: one count) |
| StartsThrottled | Warning | Deployment | the start-failure limit paused pod creation |
| Recovered | Normal | Deployment | a restarted daemon settled its recovery (figures) |

Job-level Events name the JobManager Deployment; without one they are not written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import assert_never

from rmd.core.model import (
    CreateRetryScheduled,
    LossReason,
    Notice,
    PodProblem,
    RecoveryCompleted,
    ReleaseReason,
    SlotsAllocated,
    SlotsFreed,
    StartFailure,
    StartsThrottled,
    TaskManagerChanged,
    TaskManagerLost,
    TaskManagerRegistered,
    TaskManagerState,
)
from rmd.kube.eventcorrelation import EventDraft, InvolvedObject

PodRef = Callable[[str], InvolvedObject]
MAX_JOBS_NAMED = 5  # in a TaskManagerCreated message

IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)


def created_event(pod: InvolvedObject, *, waiting_jobs: Sequence[str]) -> EventDraft:
    if waiting_jobs:
        jobs = ", ".join(waiting_jobs[:MAX_JOBS_NAMED])
        if len(waiting_jobs) > MAX_JOBS_NAMED:
            jobs += f" and {len(waiting_jobs) - MAX_JOBS_NAMED} more"
        message = f"rmd created this TaskManager pod for slots that job(s) {jobs} wait for"
    else:
        message = "rmd created this TaskManager pod (a warm spare: no job waits for slots)"
    return EventDraft(pod, "TaskManagerCreated", message)


def notice_events(
    notice: Notice, *, pod: PodRef, deployment: InvolvedObject | None
) -> list[EventDraft]:
    """The Events one notice stands for (none for most)."""
    match notice:
        case TaskManagerRegistered():
            return [
                EventDraft(
                    pod(notice.taskmanager_id),
                    "TaskManagerRegistered",
                    f"the TaskManager registered {notice.startup_seconds:.1f} s after its "
                    "create was sent; its slots can be allocated",
                )
            ]
        case TaskManagerChanged():
            if notice.new is TaskManagerState.RELEASING and notice.reason == ReleaseReason.IDLE:
                return [
                    EventDraft(
                        pod(notice.taskmanager_id),
                        "IdleReleased",
                        "no slot allocated for the idle timeout "
                        "(resourcemanager.taskmanager-timeout): rmd deletes the pod",
                    )
                ]
            return []
        case TaskManagerLost():
            return [_lost_event(notice, pod(notice.taskmanager_id))]
        case PodProblem():
            return [_problem_event(notice, pod(notice.taskmanager_id))]
        case StartFailure():
            if deployment is None:
                return []
            return [
                EventDraft(
                    deployment,
                    "TaskManagerStartFailed",
                    f"a TaskManager pod failed to start: {notice.reason}",
                    type="Warning",
                )
            ]
        case StartsThrottled():
            if deployment is None:
                return []
            return [
                EventDraft(
                    deployment,
                    "StartsThrottled",
                    f"{notice.failures_in_window} TaskManager start failures within a minute "
                    "(resourcemanager.start-worker.max-failure-rate): pod creation pauses",
                    type="Warning",
                )
            ]
        case RecoveryCompleted():
            if deployment is None:
                return []
            figures = notice.figures
            return [
                EventDraft(
                    deployment,
                    "Recovered",
                    f"rmd restarted and recovered in {notice.seconds:.1f} s: "
                    f"{figures.jobs_restored} jobs restored, {figures.adopted} TaskManager pods "
                    f"adopted ({figures.reregistered} registered again, "
                    f"{figures.not_reregistered} lost), {figures.deleted} deleted",
                )
            ]
        case SlotsAllocated() | SlotsFreed() | CreateRetryScheduled():
            return []
        case _:
            assert_never(notice)


def _lost_event(notice: TaskManagerLost, pod: InvolvedObject) -> EventDraft:
    jobs = ", ".join(notice.jobs_affected)
    affected = f"its slots went back to job(s) {jobs}" if jobs else "it held no slot"
    if notice.reason is LossReason.REGISTRATION_TIMEOUT:
        return EventDraft(
            pod,
            "RegistrationTimedOut",
            "the TaskManager did not register within resourcemanager.taskmanager-registration"
            ".timeout: rmd deletes the pod and starts another if slots are still needed",
            type="Warning",
        )
    return EventDraft(
        pod,
        "TaskManagerLost",
        f"TaskManager lost ({notice.reason.value}"
        f"{', was registered' if notice.was_registered else ', never registered'}): "
        f"{affected}; rmd starts a replacement if they are still needed",
        type="Warning",
    )


def _problem_event(notice: PodProblem, pod: InvolvedObject) -> EventDraft:
    if notice.reason == "Unschedulable":
        reason = "Unschedulable"
    elif notice.reason in IMAGE_PULL_REASONS:
        reason = "ImagePullFailed"
    else:
        reason = "ContainerNotStarting"
    message = f"{notice.reason}: {notice.message}" if notice.message else notice.reason
    return EventDraft(pod, reason, message, type="Warning")
