"""Pod status documents as the kubelet writes them."""

from __future__ import annotations

from typing import Any

import pytest

from rmd_dev.emulator.status import (
    ContainerState,
    Running,
    Terminated,
    Waiting,
    build_pod_status,
    format_time,
    image_pull_backoff_message,
    image_pull_error_message,
    image_repository,
    pod_phase,
    status_summary,
    terminated_reason,
)

T0 = 1_700_000_000.0


def make_pod(
    containers: tuple[str, ...] = ("main",),
    init: tuple[str, ...] = (),
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "uid-1"},
        "spec": {
            "nodeName": "rmd-node-1",
            "containers": [{"name": n, "image": f"img/{n}:1"} for n in containers],
        },
        "status": {"phase": "Pending", "conditions": conditions or []},
    }
    if init:
        pod["spec"]["initContainers"] = [{"name": n, "image": "init:1"} for n in init]
    return pod


def conditions_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_running_pod_has_ip_ready_conditions_and_container_status() -> None:
    status = build_pod_status(
        make_pod(),
        init_states=[],
        container_states=[Running(T0)],
        pod_ip="127.1.0.9",
        start_time=T0,
        now=T0 + 1,
    )
    assert status["phase"] == "Running"
    assert status["podIP"] == "127.1.0.9"
    assert status["podIPs"] == [{"ip": "127.1.0.9"}]
    assert status["hostIP"] == "127.0.0.1"
    assert status["startTime"] == format_time(T0) == "2023-11-14T22:13:20Z"
    conditions = conditions_of(status)
    assert [c["type"] for c in status["conditions"]] == [
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    assert all(c["status"] == "True" for c in conditions.values())
    (container,) = status["containerStatuses"]
    assert container == {
        "name": "main",
        "state": {"running": {"startedAt": "2023-11-14T22:13:20Z"}},
        "lastState": {},
        "ready": True,
        "restartCount": 0,
        "image": "img/main:1",
        "imageID": "emulator://img/main:1",
        "started": True,
        "containerID": "emulator://uid-1/main",
    }
    assert "initContainerStatuses" not in status


def test_waiting_container_keeps_the_pod_pending_and_unready() -> None:
    message = image_pull_error_message("registry.invalid/team/app:1.0")
    status = build_pod_status(
        make_pod(("main", "side")),
        init_states=[],
        container_states=[Waiting("ErrImagePull", message), Waiting("ContainerCreating")],
        pod_ip="127.1.0.9",
        start_time=T0,
        now=T0,
    )
    assert status["phase"] == "Pending"
    ready = conditions_of(status)["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [main side]"
    main = status["containerStatuses"][0]
    assert main["state"] == {"waiting": {"reason": "ErrImagePull", "message": message}}
    assert "containerID" not in main
    assert main["imageID"] == ""
    assert main["started"] is False
    assert status["containerStatuses"][1]["state"] == {"waiting": {"reason": "ContainerCreating"}}


def test_all_exit_zero_is_succeeded_with_pod_completed() -> None:
    status = build_pod_status(
        make_pod(),
        init_states=[],
        container_states=[Terminated(0, "Completed", T0, T0 + 5)],
        pod_ip="127.1.0.9",
        start_time=T0,
        now=T0 + 5,
    )
    assert status["phase"] == "Succeeded"
    assert conditions_of(status)["Ready"]["reason"] == "PodCompleted"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated == {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": format_time(T0),
        "finishedAt": format_time(T0 + 5),
    }
    assert status["containerStatuses"][0]["ready"] is False


def test_a_non_zero_exit_fails_the_pod_once_all_ended() -> None:
    states: list[ContainerState] = [Terminated(3, terminated_reason(3), T0, T0 + 1), Running(T0)]
    assert pod_phase(init_states=[], container_states=states) == "Running"
    states[1] = Terminated(0, "Completed", T0, T0 + 2)
    status = build_pod_status(
        make_pod(("a", "b")),
        init_states=[],
        container_states=states,
        pod_ip=None,
        start_time=T0,
        now=T0 + 2,
    )
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "Error"
    assert "podIP" not in status
    assert conditions_of(status)["Ready"]["reason"] == "ContainersNotReady"


def test_init_containers_are_reported_and_gate_initialized() -> None:
    pod = make_pod(init=("setup",))
    pending = build_pod_status(
        pod,
        init_states=[Running(T0)],
        container_states=[Waiting("PodInitializing")],
        pod_ip="127.1.0.9",
        start_time=T0,
        now=T0,
    )
    assert pending["phase"] == "Pending"
    initialized = conditions_of(pending)["Initialized"]
    assert initialized["status"] == "False"
    assert initialized["message"] == "containers with incomplete status: [setup]"
    done = build_pod_status(
        pod,
        init_states=[Terminated(0, "Completed", T0, T0)],
        container_states=[Running(T0)],
        pod_ip="127.1.0.9",
        start_time=T0,
        now=T0,
    )
    assert done["phase"] == "Running"
    (init_status,) = done["initContainerStatuses"]
    assert init_status["state"]["terminated"]["exitCode"] == 0
    assert init_status["ready"] is True
    assert conditions_of(done)["Initialized"]["status"] == "True"
    failed_init = [Terminated(1, "Error", T0, T0)]
    assert pod_phase(init_states=failed_init, container_states=[Waiting("x")]) == "Failed"


def test_transition_time_is_kept_while_a_condition_does_not_change() -> None:
    earlier = format_time(T0 - 100)
    pod = make_pod(
        conditions=[
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": earlier},
            {"type": "Ready", "status": "False", "lastTransitionTime": earlier},
        ]
    )
    status = build_pod_status(
        pod,
        init_states=[],
        container_states=[Running(T0)],
        pod_ip="127.1.0.1",
        start_time=T0,
        now=T0,
    )
    conditions = conditions_of(status)
    assert conditions["PodScheduled"]["lastTransitionTime"] == earlier
    assert conditions["Ready"]["lastTransitionTime"] == format_time(T0)


def test_one_state_per_container_is_required() -> None:
    with pytest.raises(ValueError, match="one state per container"):
        build_pod_status(
            make_pod(("a", "b")),
            init_states=[],
            container_states=[Running(T0)],
            pod_ip=None,
            start_time=T0,
            now=T0,
        )


def test_summary_ignores_times_but_not_states() -> None:
    def build(state: Running | Waiting, now: float) -> dict[str, Any]:
        return build_pod_status(
            make_pod(),
            init_states=[],
            container_states=[state],
            pod_ip="127.1.0.1",
            start_time=T0,
            now=now,
        )

    assert status_summary(build(Running(T0), T0)) == status_summary(build(Running(T0), T0 + 9))
    assert status_summary(build(Waiting("ErrImagePull"), T0)) != status_summary(
        build(Waiting("ImagePullBackOff"), T0)
    )


def test_image_pull_messages_look_like_the_kubelets() -> None:
    assert image_repository("registry:5000/team/app:1.2@sha256:abc") == "registry:5000/team/app"
    assert image_repository("registry:5000/app") == "registry:5000/app"
    assert image_repository("flink") == "flink"
    message = image_pull_error_message("flink:9.9")
    assert message.startswith("rpc error: code = Unknown desc = ")
    assert "pull access denied for flink," in message
    assert image_pull_backoff_message("flink:9.9") == 'Back-off pulling image "flink:9.9"'


def test_phase_without_containers_is_pending() -> None:
    assert pod_phase(init_states=[], container_states=[]) == "Pending"
