"""observe_pod on the pod shapes the API server produces, as raw JSON and as V1Pod models."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio import client

from rmd.core.model import PodObservation
from rmd.kube.observe import observe_pod


def pod(name: str = "tm-1-1", **parts: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": "42",
            "labels": {"app": "c"},
        },
        "spec": {"containers": [{"name": "flink-main-container", "image": "flink:1"}]},
        "status": {},
    }
    for key, value in parts.items():
        section, _, field = key.partition("__")
        body[section][field] = value
    return body


def container_status(name: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "image": "flink:1",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": state,
    }


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message} if message else {"reason": reason}}


def terminated(code: int, reason: str = "Error") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": "2024-01-01T00:00:00Z",
            "finishedAt": "2024-01-01T00:00:01Z",
        }
    }


SCHEDULED = {"type": "PodScheduled", "status": "True"}
UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient cpu.",
}

SHAPES: dict[str, tuple[dict[str, Any], PodObservation]] = {
    "just created": (
        pod(),
        PodObservation(name="tm-1-1"),
    ),
    "pending phase, not scheduled yet": (
        pod(status__phase="Pending"),
        PodObservation(name="tm-1-1", phase="Pending"),
    ),
    "unschedulable": (
        pod(status__phase="Pending", status__conditions=[UNSCHEDULABLE]),
        PodObservation(
            name="tm-1-1",
            phase="Pending",
            unschedulable_message="0/3 nodes are available: 3 Insufficient cpu.",
        ),
    ),
    "scheduled, container creating": (
        pod(
            spec__nodeName="node-1",
            status__phase="Pending",
            status__conditions=[SCHEDULED],
            status__containerStatuses=[
                container_status("flink-main-container", waiting("ContainerCreating"))
            ],
        ),
        PodObservation(name="tm-1-1", phase="Pending", node_name="node-1"),
    ),
    "running": (
        pod(
            spec__nodeName="node-1",
            status__phase="Running",
            status__podIP="10.0.0.7",
            status__conditions=[SCHEDULED],
            status__containerStatuses=[
                container_status(
                    "flink-main-container", {"running": {"startedAt": "2024-01-01T00:00:00Z"}}
                )
            ],
        ),
        PodObservation(name="tm-1-1", phase="Running", node_name="node-1", pod_ip="10.0.0.7"),
    ),
    "image pull back-off": (
        pod(
            spec__nodeName="node-1",
            status__phase="Pending",
            status__containerStatuses=[
                container_status(
                    "flink-main-container",
                    waiting("ImagePullBackOff", 'Back-off pulling image "flink:nope"'),
                )
            ],
        ),
        PodObservation(
            name="tm-1-1",
            phase="Pending",
            node_name="node-1",
            waiting_problem=("ImagePullBackOff", 'Back-off pulling image "flink:nope"'),
        ),
    ),
    "err image pull": (
        pod(
            spec__nodeName="node-1",
            status__containerStatuses=[
                container_status(
                    "flink-main-container", waiting("ErrImagePull", "manifest unknown")
                )
            ],
        ),
        PodObservation(
            name="tm-1-1", node_name="node-1", waiting_problem=("ErrImagePull", "manifest unknown")
        ),
    ),
    "invalid image name": (
        pod(
            spec__nodeName="n",
            status__containerStatuses=[
                container_status(
                    "flink-main-container", waiting("InvalidImageName", "couldn't parse")
                )
            ],
        ),
        PodObservation(
            name="tm-1-1", node_name="n", waiting_problem=("InvalidImageName", "couldn't parse")
        ),
    ),
    "create container config error": (
        pod(
            spec__nodeName="n",
            status__containerStatuses=[
                container_status(
                    "flink-main-container",
                    waiting("CreateContainerConfigError", 'secret "s" not found'),
                )
            ],
        ),
        PodObservation(
            name="tm-1-1",
            node_name="n",
            waiting_problem=("CreateContainerConfigError", 'secret "s" not found'),
        ),
    ),
    "create container error": (
        pod(
            spec__nodeName="n",
            status__containerStatuses=[
                container_status(
                    "flink-main-container", waiting("CreateContainerError", "no such file")
                )
            ],
        ),
        PodObservation(
            name="tm-1-1", node_name="n", waiting_problem=("CreateContainerError", "no such file")
        ),
    ),
    "crash loop without message names the container": (
        pod(
            spec__nodeName="n",
            status__phase="Running",
            status__containerStatuses=[
                container_status("flink-main-container", waiting("CrashLoopBackOff"))
            ],
        ),
        PodObservation(
            name="tm-1-1",
            phase="Running",
            node_name="n",
            waiting_problem=("CrashLoopBackOff", "container flink-main-container"),
        ),
    ),
    "init container image problem": (
        pod(
            spec__nodeName="n",
            status__phase="Pending",
            status__initContainerStatuses=[
                container_status("fetch-jars", waiting("ErrImagePull", "pull access denied"))
            ],
            status__containerStatuses=[
                container_status("flink-main-container", waiting("PodInitializing"))
            ],
        ),
        PodObservation(
            name="tm-1-1",
            phase="Pending",
            node_name="n",
            waiting_problem=("ErrImagePull", "pull access denied"),
        ),
    ),
    "main container exited with an error": (
        pod(
            spec__nodeName="n",
            status__phase="Failed",
            status__podIP="10.0.0.8",
            status__containerStatuses=[
                container_status("flink-main-container", terminated(137, "OOMKilled"))
            ],
        ),
        PodObservation(
            name="tm-1-1",
            phase="Failed",
            node_name="n",
            pod_ip="10.0.0.8",
            terminated_exit_code=137,
        ),
    ),
    "main container terminated while phase still says Running": (
        pod(
            spec__nodeName="n",
            status__phase="Running",
            status__podIP="10.0.0.8",
            status__containerStatuses=[
                container_status("sidecar", {"running": {}}),
                container_status("flink-main-container", terminated(1)),
            ],
        ),
        PodObservation(
            name="tm-1-1", phase="Running", node_name="n", pod_ip="10.0.0.8", terminated_exit_code=1
        ),
    ),
    "main container exited cleanly": (
        pod(
            spec__nodeName="n",
            status__phase="Succeeded",
            status__containerStatuses=[
                container_status("flink-main-container", terminated(0, "Completed"))
            ],
        ),
        PodObservation(name="tm-1-1", phase="Succeeded", node_name="n", terminated_exit_code=0),
    ),
    "init container completed: not a termination": (
        pod(
            spec__nodeName="n",
            status__phase="Running",
            status__podIP="10.0.0.9",
            status__initContainerStatuses=[
                container_status("fetch-jars", terminated(0, "Completed"))
            ],
            status__containerStatuses=[container_status("flink-main-container", {"running": {}})],
        ),
        PodObservation(name="tm-1-1", phase="Running", node_name="n", pod_ip="10.0.0.9"),
    ),
    "init container failed": (
        pod(
            spec__nodeName="n",
            status__phase="Failed",
            status__initContainerStatuses=[container_status("fetch-jars", terminated(2))],
            status__containerStatuses=[
                container_status("flink-main-container", waiting("PodInitializing"))
            ],
        ),
        PodObservation(name="tm-1-1", phase="Failed", node_name="n", terminated_exit_code=2),
    ),
    "being deleted": (
        pod(
            metadata__deletionTimestamp="2024-01-01T00:00:05Z",
            metadata__deletionGracePeriodSeconds=30,
            spec__nodeName="n",
            status__phase="Running",
            status__podIP="10.0.0.7",
        ),
        PodObservation(
            name="tm-1-1", phase="Running", node_name="n", pod_ip="10.0.0.7", deleting=True
        ),
    ),
    "evicted": (
        pod(
            spec__nodeName="n",
            status__phase="Failed",
            status__reason="Evicted",
            status__message="The node was low on resource: memory.",
        ),
        PodObservation(name="tm-1-1", phase="Failed", node_name="n"),
    ),
    "unknown phase (node lost)": (
        pod(spec__nodeName="n", status__phase="Unknown"),
        PodObservation(name="tm-1-1", phase="Unknown", node_name="n"),
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_observe_raw_json(shape: str) -> None:
    raw, expected = SHAPES[shape]
    assert observe_pod(raw) == expected


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
async def test_observe_model_gives_the_same_answer(shape: str) -> None:
    raw, expected = SHAPES[shape]
    async with client.ApiClient(client.Configuration()) as api:
        model = api.deserialize(SimpleNamespace(data=json.dumps(raw)), "V1Pod")
    assert isinstance(model, client.V1Pod)
    assert observe_pod(model) == expected


def test_observe_hand_built_model() -> None:
    model = client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="tm-2-3", deletion_timestamp=datetime(2024, 1, 1, tzinfo=UTC)
        ),
        spec=client.V1PodSpec(
            node_name="node-2",
            containers=[client.V1Container(name="flink-main-container", image="flink:1")],
        ),
        status=client.V1PodStatus(
            phase="Pending",
            conditions=[client.V1PodCondition(type="PodScheduled", status="True")],
            container_statuses=[
                client.V1ContainerStatus(
                    name="flink-main-container",
                    image="flink:1",
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=client.V1ContainerState(
                        waiting=client.V1ContainerStateWaiting(
                            reason="ErrImagePull", message="not found"
                        )
                    ),
                )
            ],
        ),
    )
    assert observe_pod(model) == PodObservation(
        name="tm-2-3",
        phase="Pending",
        node_name="node-2",
        deleting=True,
        waiting_problem=("ErrImagePull", "not found"),
    )


def test_scheduled_condition_true_is_not_unschedulable() -> None:
    raw = pod(
        status__conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulerError"}]
    )
    assert observe_pod(raw).unschedulable_message is None


def test_unschedulable_without_message_still_says_so() -> None:
    condition = {k: v for k, v in UNSCHEDULABLE.items() if k != "message"}
    assert observe_pod(pod(status__conditions=[condition])).unschedulable_message == "Unschedulable"


def test_input_is_not_modified() -> None:
    raw, _ = SHAPES["main container exited with an error"]
    before = copy.deepcopy(raw)
    observe_pod(raw)
    assert raw == before


def test_garbage_fields_do_not_crash() -> None:
    raw = {
        "metadata": {"name": "x"},
        "spec": None,
        "status": {"containerStatuses": [None, "junk", {"state": None}], "conditions": "nope"},
    }
    assert observe_pod(raw) == PodObservation(name="x")
