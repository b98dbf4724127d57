"""Pod status documents as the kubelet (v1.20) writes them — pure, no I/O.

The node emulator keeps a :data:`ContainerState` per container and turns the whole picture
into the body of a merge-patch on ``pods/{name}/status`` with :func:`build_pod_status`:
phase (the kubelet's ``getPhase``), conditions (kept ``lastTransitionTime`` when a condition
did not change; Ready and ContainersReady follow the readiness probes' results),
``containerStatuses`` / ``initContainerStatuses``, pod and host IP and the
start time. No container restarts are emulated: once every container has terminated the
phase is Succeeded (all exit codes 0) or Failed, whatever the ``restartPolicy``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Pod = Mapping[str, Any]
HOST_IP = "127.0.0.1"

# The kubelet's waiting reasons and messages (docker-era v1.20 wording).
REASON_CONTAINER_CREATING = "ContainerCreating"
REASON_POD_INITIALIZING = "PodInitializing"
REASON_ERR_IMAGE_PULL = "ErrImagePull"
REASON_IMAGE_PULL_BACKOFF = "ImagePullBackOff"
REASON_CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
REASON_COMPLETED = "Completed"
REASON_ERROR = "Error"
REASON_CANNOT_RUN = "ContainerCannotRun"
REASON_UNKNOWN = "ContainerStatusUnknown"


def image_repository(image: str) -> str:
    """``registry:5000/team/app:1.2@sha256:...`` → ``registry:5000/team/app``."""
    without_digest = image.split("@", 1)[0]
    slash = without_digest.rfind("/")
    colon = without_digest.rfind(":")
    return without_digest[:colon] if colon > slash else without_digest


def image_pull_error_message(image: str) -> str:
    repository = image_repository(image)
    return (
        f"rpc error: code = Unknown desc = Error response from daemon: pull access denied for "
        f"{repository}, repository does not exist or may require 'docker login': denied: "
        f"requested access to the resource is denied"
    )


def image_pull_backoff_message(image: str) -> str:
    return f'Back-off pulling image "{image}"'


def cannot_run_message(executable: str, problem: str) -> str:
    return (
        "OCI runtime create failed: container_linux.go:370: starting container process caused: "
        f'exec: "{executable}": {problem}: unknown'
    )


@dataclass(frozen=True, slots=True)
class Waiting:
    reason: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Running:
    started_at: float  # wall-clock seconds


@dataclass(frozen=True, slots=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: float | None
    finished_at: float
    message: str | None = None


ContainerState = Waiting | Running | Terminated


def terminated_reason(exit_code: int) -> str:
    return REASON_COMPLETED if exit_code == 0 else REASON_ERROR


def format_time(wall_seconds: float) -> str:
    return datetime.fromtimestamp(wall_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_id(pod_uid: str, container_name: str) -> str:
    return f"emulator://{pod_uid}/{container_name}"


def image_id(image: str) -> str:
    return f"emulator://{image}"


def pod_phase(
    *,
    init_states: Sequence[ContainerState],
    container_states: Sequence[ContainerState],
) -> str:
    """The kubelet's ``getPhase`` without restarts (see the module docstring)."""
    for state in init_states:
        if isinstance(state, Terminated) and state.exit_code != 0:
            return "Failed"
        if not isinstance(state, Terminated):
            return "Pending"
    if not container_states or any(isinstance(s, Waiting) for s in container_states):
        return "Pending"
    if any(isinstance(s, Running) for s in container_states):
        return "Running"
    if all(isinstance(s, Terminated) and s.exit_code == 0 for s in container_states):
        return "Succeeded"
    return "Failed"


def _state_document(state: ContainerState) -> dict[str, Any]:
    if isinstance(state, Waiting):
        waiting: dict[str, Any] = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": format_time(state.started_at)}}
    terminated: dict[str, Any] = {
        "exitCode": state.exit_code,
        "reason": state.reason,
        "startedAt": format_time(
            state.started_at if state.started_at is not None else state.finished_at
        ),
        "finishedAt": format_time(state.finished_at),
    }
    if state.message:
        terminated["message"] = state.message
    return {"terminated": terminated}


def container_status(
    container: Mapping[str, Any],
    state: ContainerState,
    *,
    pod_uid: str,
    init: bool = False,
    probe_ready: bool = True,
) -> dict[str, Any]:
    """``probe_ready``: what the container's readiness probe says (True without one)."""
    name = str(container.get("name", ""))
    image = str(container.get("image", ""))
    created = not isinstance(state, Waiting)
    if init:
        ready = isinstance(state, Terminated) and state.exit_code == 0
    else:
        ready = isinstance(state, Running) and probe_ready
    document: dict[str, Any] = {
        "name": name,
        "state": _state_document(state),
        "lastState": {},
        "ready": ready,
        "restartCount": 0,
        "image": image,
        "imageID": image_id(image) if created else "",
        "started": isinstance(state, Running),
    }
    if created:
        document["containerID"] = container_id(pod_uid, name)
    return document


def _names_where(
    containers: Sequence[Mapping[str, Any]],
    states: Sequence[ContainerState],
    *,
    unfinished: bool,
    probe_ready: Sequence[bool] | None = None,
) -> list[str]:
    names: list[str] = []
    ready = probe_ready if probe_ready is not None else [True] * len(states)
    for container, state, probed in zip(containers, states, ready, strict=True):
        if unfinished:
            done = isinstance(state, Terminated) and state.exit_code == 0
        else:
            done = isinstance(state, Running) and probed
        if not done:
            names.append(str(container.get("name", "")))
    return names


def _condition(
    kind: str,
    *,
    true: bool,
    reason: str | None,
    message: str | None,
    previous: Mapping[str, Mapping[str, Any]],
    now: float,
) -> dict[str, Any]:
    status = "True" if true else "False"
    old = previous.get(kind)
    if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
        transition = str(old["lastTransitionTime"])
    else:
        transition = format_time(now)
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastTransitionTime": transition,
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def build_pod_status(
    pod: Pod,
    *,
    init_states: Sequence[ContainerState],
    container_states: Sequence[ContainerState],
    pod_ip: str | None,
    start_time: float,
    now: float,
    host_ip: str = HOST_IP,
    probe_ready: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The ``status`` to merge-patch: states are given in the order of the pod's
    ``initContainers`` and ``containers``; ``probe_ready``, in the containers' order, what
    their readiness probes say (None: no probes, a running container is ready)."""
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or [])
    init_containers = list(spec.get("initContainers") or [])
    if len(containers) != len(container_states) or len(init_containers) != len(init_states):
        raise ValueError("one state per container, in the pod's order")
    ready = list(probe_ready) if probe_ready is not None else [True] * len(containers)
    if len(ready) != len(containers):
        raise ValueError("one readiness per container, in the pod's order")
    uid = str((pod.get("metadata") or {}).get("uid", ""))
    phase = pod_phase(init_states=init_states, container_states=container_states)
    previous = {str(c.get("type")): c for c in (pod.get("status") or {}).get("conditions") or []}

    not_initialized = _names_where(init_containers, init_states, unfinished=True)
    initialized = _condition(
        "Initialized",
        true=not not_initialized,
        reason=None if not not_initialized else "ContainersNotInitialized",
        message=(
            None
            if not not_initialized
            else f"containers with incomplete status: [{' '.join(not_initialized)}]"
        ),
        previous=previous,
        now=now,
    )
    unready = _names_where(containers, container_states, unfinished=False, probe_ready=ready)
    if not unready:
        ready_reason, ready_message = None, None
    elif phase == "Succeeded":
        ready_reason, ready_message = "PodCompleted", None
    else:
        ready_reason = "ContainersNotReady"
        ready_message = f"containers with unready status: [{' '.join(unready)}]"
    conditions = [
        initialized,
        _condition(
            "Ready",
            true=not unready,
            reason=ready_reason,
            message=ready_message,
            previous=previous,
            now=now,
        ),
        _condition(
            "ContainersReady",
            true=not unready,
            reason=ready_reason,
            message=ready_message,
            previous=previous,
            now=now,
        ),
        _condition(
            "PodScheduled", true=True, reason=None, message=None, previous=previous, now=now
        ),
    ]

    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "startTime": format_time(start_time),
        "containerStatuses": [
            container_status(container, state, pod_uid=uid, probe_ready=probed)
            for container, state, probed in zip(containers, container_states, ready, strict=True)
        ],
    }
    if init_containers:
        status["initContainerStatuses"] = [
            container_status(container, state, pod_uid=uid, init=True)
            for container, state in zip(init_containers, init_states, strict=True)
        ]
    if pod_ip is not None:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status


def status_summary(status: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two status documents different for an observer (not the probe times):
    used to skip a PATCH that would change nothing."""
    containers = tuple(
        (c["name"], repr(c["state"]), c["ready"])
        for c in list(status.get("initContainerStatuses") or [])
        + list(status.get("containerStatuses") or [])
    )
    conditions = tuple(
        (c["type"], c["status"], c.get("reason"), c.get("message"))
        for c in status.get("conditions") or []
    )
    return (status.get("phase"), status.get("podIP"), conditions, containers)
