"""Turn a pod, as the API server shows it, into the daemon's :class:`PodObservation`.

Works on the raw JSON mapping (what the watch stream and raw lists carry, camelCase keys)
and on kubernetes_asyncio's ``V1Pod`` model alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes_asyncio.client import V1Pod

from rmd.core.model import PodObservation
from rmd.kube.statelabel import STATE_LABEL

# Waiting reasons that do not go away by themselves: a human has to fix the image, the
# config or the program. (ContainerCreating, PodInitializing are normal and not listed.)
PROBLEM_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)


def observe_pod(pod: V1Pod | Mapping[str, Any]) -> PodObservation:
    """What the daemon needs to know of one pod. Missing fields read as "not yet"."""
    raw: Mapping[str, Any] = pod.to_dict(serialize=True) if isinstance(pod, V1Pod) else pod
    metadata = _mapping(raw.get("metadata"))
    spec = _mapping(raw.get("spec"))
    status = _mapping(raw.get("status"))
    init_statuses = _mappings(status.get("initContainerStatuses"))
    main_statuses = _mappings(status.get("containerStatuses"))
    return PodObservation(
        name=str(metadata.get("name") or ""),
        phase=str(status.get("phase") or "Pending"),
        node_name=_text_or_none(spec.get("nodeName")),
        pod_ip=_text_or_none(status.get("podIP")),
        deleting=metadata.get("deletionTimestamp") is not None,
        unschedulable_message=_unschedulable_message(_mappings(status.get("conditions"))),
        waiting_problem=_waiting_problem([*init_statuses, *main_statuses]),
        terminated_exit_code=_terminated_exit_code(init=init_statuses, main=main_statuses),
        uid=_text_or_none(metadata.get("uid")),
        state_label=_text_or_none(_mapping(metadata.get("labels")).get(STATE_LABEL)),
    )


def _unschedulable_message(conditions: Iterable[Mapping[str, Any]]) -> str | None:
    for condition in conditions:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return str(condition.get("message") or "Unschedulable")
    return None


def _waiting_problem(statuses: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    for container in statuses:
        waiting = _mapping(_mapping(container.get("state")).get("waiting"))
        reason = waiting.get("reason")
        if reason in PROBLEM_WAITING_REASONS:
            message = str(waiting.get("message") or "")
            name = container.get("name")
            if name and not message:
                message = f"container {name}"
            return str(reason), message
    return None


def _terminated_exit_code(
    *, init: Iterable[Mapping[str, Any]], main: Iterable[Mapping[str, Any]]
) -> int | None:
    """The exit code of a terminated container.

    Any main container that terminated counts, whatever its code. An init container that
    terminated with 0 did its job (that is how init containers end), so only a non-zero
    init exit counts.
    """
    for container in init:
        code = _exit_code(container)
        if code is not None and code != 0:
            return code
    for container in main:
        code = _exit_code(container)
        if code is not None:
            return code
    return None


def _exit_code(container: Mapping[str, Any]) -> int | None:
    terminated = _mapping(container.get("state")).get("terminated")
    if not isinstance(terminated, Mapping):
        return None
    code = terminated.get("exitCode")
    # exitCode is required by the API; a terminated state without one still means "ended".
    return int(code) if isinstance(code, int) else -1


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _text_or_none(value: object) -> str | None:
    return str(value) if value else None
