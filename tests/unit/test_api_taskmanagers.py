"""TaskManager side of the HTTP API: registration, heartbeats, deregistration."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from rmd.core.clock import ManualClock
from rmd.core.model import DeletePod, PodObservation, ReleaseReason, TaskManagerState
from tests.unit.api_fake_engine import InMemoryEngine, make_app, make_engine

TASKMANAGER_FIELDS = {
    "taskmanager_id",
    "state",
    "slots_total",
    "slots_allocated",
    "address",
    "slots",
    "idle_since",
    "problem",
    "pod_phase",
    "node_name",
    "kept_as_spare",
    "delete_waits_for_create",
    "created_at",
}

ClientFactory = Any
FIX_HINT = re.compile(r": (send|use|give) ")  # every detail says what to fix


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(clock: ManualClock) -> InMemoryEngine:
    return make_engine(slots_per_taskmanager=2, clock=clock)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, engine: InMemoryEngine) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(engine))  # type: ignore[no-any-return]


@pytest.fixture
async def pod(client: TestClient[Any, Any], engine: InMemoryEngine) -> str:
    """One TaskManager pod created by the daemon and started, not registered yet."""
    await client.put("/v1/jobs/j1/requirements", json={"slots": 1})
    [name] = engine.start_requested_pods()
    return name


def registration(name: str, **changes: Any) -> dict[str, Any]:
    return {"taskmanager_id": name, "address": "10.0.0.7:6122", "slots": 2, **changes}


async def test_registration_answers_the_taskmanager_view(
    client: TestClient[Any, Any], pod: str
) -> None:
    response = await client.post("/v1/taskmanagers", json=registration(pod))

    assert response.status == 200
    body = await response.json()
    assert set(body) == TASKMANAGER_FIELDS
    assert body["taskmanager_id"] == pod
    assert body["state"] == "registered"
    assert body["slots_total"] == 2
    assert body["slots_allocated"] == 1  # j1 got its slot at once
    assert body["address"] == "10.0.0.7:6122"
    assert {"slot_id": f"{pod}/0", "job_id": "j1"} in body["slots"]
    assert body["idle_since"] is None
    assert body["problem"] is None
    job = await (await client.get("/v1/jobs/j1")).json()
    assert job["fulfilled"] is True


async def test_reregistering_is_harmless(client: TestClient[Any, Any], pod: str) -> None:
    first = await (await client.post("/v1/taskmanagers", json=registration(pod))).json()
    again = await client.post("/v1/taskmanagers", json=registration(pod))

    assert again.status == 200
    assert (await again.json())["slots"] == first["slots"]


async def test_a_pod_the_daemon_did_not_create_is_refused(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    response = await client.post("/v1/taskmanagers", json=registration("someone-elses-pod"))

    assert response.status == 403
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["type"] == "urn:rmd:problem:registration-refused"
    assert "someone-elses-pod" in problem["detail"]
    assert engine.allocator.taskmanager_views() == []


async def test_a_pod_being_deleted_is_refused(
    client: TestClient[Any, Any], engine: InMemoryEngine, pod: str
) -> None:
    # Someone else deletes the pod (its deletionTimestamp is set) before its agent registers.
    engine.apply(
        engine.allocator.pod_observed(
            PodObservation(pod, phase="Running", node_name="n", deleting=True)
        )
    )

    response = await client.post("/v1/taskmanagers", json=registration(pod))

    assert response.status == 403
    problem = await response.json()
    assert problem["type"] == "urn:rmd:problem:registration-refused"
    assert pod in problem["detail"]
    assert all(
        view.state is not TaskManagerState.REGISTERED
        for view in engine.allocator.taskmanager_views()
        if view.taskmanager_id == pod
    )
    assert (await (await client.get("/v1/jobs/j1")).json())["slots_allocated"] == 0


async def test_a_taskmanager_of_another_cluster_id_is_refused(
    client: TestClient[Any, Any], engine: InMemoryEngine, pod: str
) -> None:
    # Same namespace, another Flink cluster ("flink-2"): its pod name follows the same rule.
    other = pod.replace("flink-1-", "flink-2-", 1)
    assert other != pod

    response = await client.post("/v1/taskmanagers", json=registration(other))

    assert response.status == 403
    problem = await response.json()
    assert problem["type"] == "urn:rmd:problem:registration-refused"
    assert other in problem["detail"]
    assert [view.taskmanager_id for view in engine.allocator.taskmanager_views()] == [pod]
    assert (await (await client.get("/v1/jobs/j1")).json())["slots_allocated"] == 0


async def test_idle_since_is_an_rfc3339_utc_time(
    client: TestClient[Any, Any], engine: InMemoryEngine, clock: ManualClock, pod: str
) -> None:
    await client.post("/v1/taskmanagers", json=registration(pod))
    await client.delete("/v1/jobs/j1")

    body = await (await client.get(f"/v1/taskmanagers/{pod}")).json()

    assert body["idle_since"].endswith("Z")
    idle_since = datetime.fromisoformat(body["idle_since"])
    assert idle_since.utcoffset() == timedelta(0)
    assert abs(idle_since.timestamp() - clock.wall()) < 0.001


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"slots": []}',
        b'{"slots": [{"slot_id": "POD/0", "job_id": null}]}',
        b'{"slots": [{"slot_id": "POD/1", "job_id": "j1"}, {"slot_id": "POD/0"}]}',
    ],
)
async def test_heartbeat_accepts_empty_or_a_slot_report(
    client: TestClient[Any, Any], pod: str, body: bytes
) -> None:
    await client.post("/v1/taskmanagers", json=registration(pod))

    response = await client.put(
        f"/v1/taskmanagers/{pod}/heartbeat", data=body.replace(b"POD", pod.encode())
    )

    assert response.status == 200
    view = await response.json()
    assert set(view) == TASKMANAGER_FIELDS
    assert view["state"] == "registered"


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"[]", None), (b"{", None), (b'{"slots": 3}', "slots"), (b'{"slots": [1]}', "slots[0]")],
)
async def test_heartbeat_with_a_malformed_body_is_400(
    client: TestClient[Any, Any], pod: str, body: bytes, field: str | None
) -> None:
    await client.post("/v1/taskmanagers", json=registration(pod))

    response = await client.put(f"/v1/taskmanagers/{pod}/heartbeat", data=body)

    assert response.status == 400
    assert (await response.json()).get("field") == field


def slot(slot_id: object, job_id: object = None) -> dict[str, object]:
    return {"slot_id": slot_id, "job_id": job_id}


@pytest.mark.parametrize(
    ("slots", "status", "field"),
    [
        ({"slot_id": "POD/0"}, 400, "slots"),
        ([slot("POD/0"), "POD/1"], 400, "slots[1]"),
        ([{"job_id": "j1"}], 400, "slots[0].slot_id"),
        ([slot(0)], 400, "slots[0].slot_id"),
        ([slot("POD/0", job_id=7)], 400, "slots[0].job_id"),
        ([slot("flink-1-taskmanager-9-9/0")], 422, "slots[0].slot_id"),  # another TaskManager
        ([slot("POD")], 422, "slots[0].slot_id"),
        ([slot("POD/01")], 422, "slots[0].slot_id"),
        ([slot("POD/-1")], 422, "slots[0].slot_id"),
        ([slot("POD/2")], 422, "slots[0].slot_id"),  # the TaskManager has 2 slots: 0 and 1
        ([slot("POD/0"), slot("POD/0", "j1")], 422, "slots[1].slot_id"),
        ([slot("POD/0"), slot("POD/1"), slot("POD/2")], 422, "slots[2].slot_id"),  # > slots
        ([slot("POD/0", job_id="..")], 422, "slots[0].job_id"),
        ([slot("POD/0", job_id="a b")], 422, "slots[0].job_id"),
        ([slot("POD/0", job_id="j" * 129)], 422, "slots[0].job_id"),
    ],
)
async def test_a_wrong_slot_report_names_the_field_and_changes_nothing(
    client: TestClient[Any, Any],
    engine: InMemoryEngine,
    clock: ManualClock,
    pod: str,
    slots: object,
    status: int,
    field: str,
) -> None:
    await client.post("/v1/taskmanagers", json=registration(pod))
    deadline_before = engine.allocator.next_deadline()
    clock.advance(5.0)
    body = json.loads(json.dumps({"slots": slots}).replace("POD", pod))

    response = await client.put(f"/v1/taskmanagers/{pod}/heartbeat", json=body)

    assert response.status == status
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["field"] == field
    assert FIX_HINT.search(problem["detail"]), problem["detail"]
    assert engine.allocator.next_deadline() == deadline_before  # not taken as a heartbeat
    accepted = await client.put(f"/v1/taskmanagers/{pod}/heartbeat", json={})
    assert accepted.status == 200
    assert engine.allocator.next_deadline() != deadline_before


async def test_a_slot_report_for_an_unknown_taskmanager_is_404(
    client: TestClient[Any, Any],
) -> None:
    name = "flink-1-taskmanager-9-9"
    response = await client.put(
        f"/v1/taskmanagers/{name}/heartbeat", json={"slots": [slot(f"{name}/0")]}
    )

    assert response.status == 404


async def test_heartbeat_of_an_unknown_taskmanager_is_404(client: TestClient[Any, Any]) -> None:
    response = await client.put("/v1/taskmanagers/flink-1-taskmanager-9-9/heartbeat", json={})

    assert response.status == 404
    assert (await response.json())["type"] == "urn:rmd:problem:unknown-taskmanager"


async def test_deregistration_frees_slots_and_releases_the_pod(
    client: TestClient[Any, Any], engine: InMemoryEngine, pod: str
) -> None:
    await client.post("/v1/taskmanagers", json=registration(pod))

    response = await client.delete(f"/v1/taskmanagers/{pod}")

    assert response.status == 204
    assert DeletePod(name=pod, reason=ReleaseReason.DEREGISTERED) in engine.applied
    job = await (await client.get("/v1/jobs/j1")).json()
    assert job["slots_allocated"] == 0
    tm = await client.get(f"/v1/taskmanagers/{pod}")
    assert tm.status == 200
    assert (await tm.json())["state"] == "releasing"


async def test_deregistering_an_unknown_taskmanager_is_404(client: TestClient[Any, Any]) -> None:
    response = await client.delete("/v1/taskmanagers/flink-1-taskmanager-9-9")

    assert response.status == 404


async def test_get_one_and_all_taskmanagers(client: TestClient[Any, Any], pod: str) -> None:
    one = await client.get(f"/v1/taskmanagers/{pod}")
    listed = await client.get("/v1/taskmanagers")
    unknown = await client.get("/v1/taskmanagers/flink-1-taskmanager-9-9")

    assert one.status == 200
    assert (await one.json())["state"] == "pending"
    assert [tm["taskmanager_id"] for tm in (await listed.json())["taskmanagers"]] == [pod]
    assert unknown.status == 404


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"address": "[::1]:6122"}, 200, None),
        ({"address": "tm-1.flink.svc.cluster.local:6122"}, 200, None),
        ({"slots": 10_000}, 409, None),  # valid JSON, more slots than the pod was made for
        ({"unknown": "ignored"}, 200, None),
        ({"taskmanager_id": None}, 400, "taskmanager_id"),
        ({"taskmanager_id": 5}, 400, "taskmanager_id"),
        ({"taskmanager_id": "Upper-Case"}, 422, "taskmanager_id"),
        ({"taskmanager_id": "under_score"}, 422, "taskmanager_id"),
        ({"taskmanager_id": "-leading-dash"}, 422, "taskmanager_id"),
        ({"taskmanager_id": "a" * 129}, 422, "taskmanager_id"),
        ({"address": 6122}, 400, "address"),
        ({"address": None}, 400, "address"),
        ({"address": "10.0.0.7"}, 422, "address"),
        ({"address": ":6122"}, 422, "address"),
        ({"address": "10.0.0.7:0"}, 422, "address"),
        ({"address": "10.0.0.7:65536"}, 422, "address"),
        ({"address": "10.0.0.7:61a2"}, 422, "address"),
        ({"address": "[zz::1]:6122"}, 422, "address"),
        ({"address": "bad host:6122"}, 422, "address"),
        ({"slots": 0}, 422, "slots"),
        ({"slots": 10_001}, 422, "slots"),
        ({"slots": "2"}, 400, "slots"),
        ({"slots": 2.0}, 400, "slots"),
        ({"slots": False}, 400, "slots"),
    ],
)
async def test_registration_validation(
    client: TestClient[Any, Any],
    engine: InMemoryEngine,
    pod: str,
    changes: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    body = {key: value for key, value in registration(pod, **changes).items() if value is not None}
    views_before = engine.allocator.taskmanager_views()

    response = await client.post("/v1/taskmanagers", json=body)

    assert response.status == status, await response.text()
    if status != 200:
        problem = await response.json()
        assert problem.get("field") == field
        assert FIX_HINT.search(problem["detail"]), problem["detail"]
        assert engine.allocator.taskmanager_views() == views_before


@pytest.mark.parametrize("bad_id", ["Upper", "under_score", "a" * 129, "dot.", "%C3%BC"])
async def test_bad_taskmanager_ids_in_paths_are_422(
    client: TestClient[Any, Any], bad_id: str
) -> None:
    for response in [
        await client.get(f"/v1/taskmanagers/{bad_id}"),
        await client.put(f"/v1/taskmanagers/{bad_id}/heartbeat", json={}),
        await client.delete(f"/v1/taskmanagers/{bad_id}"),
    ]:
        assert response.status == 422
        assert (await response.json())["field"] == "taskmanager_id"
