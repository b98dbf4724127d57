"""Sentences that tell a person why a job waits, and what would fix it."""

from __future__ import annotations

from rmd.core.model import ProblemView


def slot_cap_reason(*, short: int, required: int, max_slots: int) -> str:
    return (
        f"{short} of the {required} required slots cannot be provided: the cluster-wide limit "
        f"slotmanager.number-of-slots.max = {max_slots} is reached (jobs declared earlier are "
        f"served first); they are allocated when other jobs free slots, or raise the limit"
    )


def starts_paused_reason(*, failures: int, limit: float, resumes_in: float) -> str:
    return (
        f"TaskManager pod starts are paused for {resumes_in:.1f} s: {failures} start failures "
        f"in the last minute reached resourcemanager.start-worker.max-failure-rate = "
        f"{limit:g}; look at the problems of the failing pods"
    )


def starts_limited_reason(*, failures: int, limit: float) -> str:
    return (
        f"TaskManager pod starts are limited: {failures} start failures in the last minute "
        f"(resourcemanager.start-worker.max-failure-rate = {limit:g}); a new pod starts as "
        f"failures leave that minute or pods on their way register; look at the problems of "
        f"the failing pods"
    )


def pod_problem_reason(problem: ProblemView) -> str:
    return (
        f"TaskManager pod {problem.taskmanager_id} cannot start: {problem.reason}: "
        f"{problem.message}"
    )


def create_failure_reason(problem: ProblemView) -> str:
    return (
        f"creating TaskManager pod {problem.taskmanager_id} failed: {problem.reason}: "
        f"{problem.message}"
    )


def api_unreachable_reason(*, waiting: int, error: ProblemView, retry_in: float) -> str:
    creates = "create waits" if waiting == 1 else "creates wait"
    again = f"{waiting} TaskManager pod {creates} to be sent again, the next in {retry_in:.1f} s"
    if error.reason == "QuotaExceeded":
        return (
            f"a ResourceQuota of the namespace refuses TaskManager pods ({error.reason}: "
            f"{error.message}): {again}; raise the quota or lower the demand"
        )
    if error.reason in ("Forbidden", "Unauthorized"):
        return (
            f"the Kubernetes API server refuses the daemon's pod creates ({error.reason}: "
            f"{error.message}): {again}; give the daemon's service account its Role and "
            f"RoleBinding (conf/kubernetes/rbac.yaml) or valid credentials"
        )
    trouble = "does not answer in time" if error.reason == "Timeout" else "cannot be reached"
    return (
        f"the Kubernetes API server {trouble} ({error.reason}: {error.message}): "
        f"{waiting} TaskManager pod {creates} to be sent again, the next in {retry_in:.1f} s; "
        f"this is not the pods' fault: check the API server and the network to it"
    )


def creates_unanswered_reason(*, waiting: int, seconds: float) -> str:
    creates = "create has" if waiting == 1 else "creates have"
    return (
        f"{waiting} TaskManager pod {creates} had no answer from the Kubernetes API server "
        f"for {seconds:.0f} s: it accepts requests but does not complete writes (check its "
        f"storage, etcd, and its log); this is not the pods' fault"
    )
