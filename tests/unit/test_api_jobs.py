"""JobMaster side of the HTTP API: /v1/jobs, against the real allocator."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from rmd.core.model import CreatePod, PodObservation
from tests.support.background import Background
from tests.support.waiting import within
from tests.unit.api_fake_engine import InMemoryEngine, make_app, make_engine

JOB_FIELDS = {
    "job_id",
    "slots_required",
    "slots_allocated",
    "fulfilled",
    "slots",
    "unfulfilled_reason",
    "problems",
    "waiting_since",
}

ClientFactory = Any  # pytest-aiohttp's aiohttp_client fixture
FIX_HINT = re.compile(r": (send|use|give) ")  # every detail says what to fix


@pytest.fixture
def engine() -> InMemoryEngine:
    return make_engine(slots_per_taskmanager=2)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, engine: InMemoryEngine) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(engine, max_wait=30.0))  # type: ignore[no-any-return]


async def register_all(client: TestClient[Any, Any], engine: InMemoryEngine) -> list[str]:
    """What the Kubernetes edge and the TaskManager agents would do: start and register pods."""
    names = engine.start_requested_pods()
    for index, name in enumerate(names):
        response = await client.post(
            "/v1/taskmanagers",
            json={"taskmanager_id": name, "address": f"10.0.0.{index + 1}:6122", "slots": 2},
        )
        assert response.status == 200, await response.text()
    return names


async def test_put_requirements_answers_the_job_view_and_requests_pods(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    response = await client.put("/v1/jobs/j1/requirements", json={"slots": 3})

    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == JOB_FIELDS
    assert body["job_id"] == "j1"
    assert body["slots_required"] == 3
    assert body["slots_allocated"] == 0
    assert body["fulfilled"] is False
    assert body["slots"] == []
    assert len([a for a in engine.applied if isinstance(a, CreatePod)]) == 2  # ceil(3 / 2)


async def test_same_declaration_again_changes_nothing(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    first = await client.put("/v1/jobs/j1/requirements", json={"slots": 4})
    pods_after_first = engine.created_pods()
    second = await client.put("/v1/jobs/j1/requirements", json={"slots": 4})

    assert await first.json() == await second.json()
    assert engine.created_pods() == pods_after_first


async def test_job_is_fulfilled_with_slots_on_registered_taskmanagers(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 4})
    names = await register_all(client, engine)

    body = await (await client.get("/v1/jobs/j1")).json()

    assert body["fulfilled"] is True
    assert body["slots_allocated"] == 4
    assert {slot["taskmanager_id"] for slot in body["slots"]} == set(names)
    assert {slot["address"] for slot in body["slots"]} == {"10.0.0.1:6122", "10.0.0.2:6122"}
    assert all(slot["slot_id"].startswith(slot["taskmanager_id"] + "/") for slot in body["slots"])
    assert body["unfulfilled_reason"] is None


async def test_unknown_job_is_404_problem(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/jobs/nope")

    assert response.status == 404
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["type"] == "urn:rmd:problem:unknown-job"
    assert problem["status"] == 404
    assert problem["detail"]


async def test_delete_job_frees_it_and_forgets_it(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 2})
    await register_all(client, engine)

    response = await client.delete("/v1/jobs/j1")

    assert response.status == 204
    assert (await client.get("/v1/jobs/j1")).status == 404
    assert engine.allocator.status().slots_allocated == 0
    assert (await client.delete("/v1/jobs/j1")).status == 404


async def test_list_jobs(client: TestClient[Any, Any]) -> None:
    await client.put("/v1/jobs/a/requirements", json={"slots": 1})
    await client.put("/v1/jobs/b/requirements", json={"slots": 0})

    body = await (await client.get("/v1/jobs")).json()

    assert sorted(job["job_id"] for job in body["jobs"]) == ["a", "b"]
    assert all(set(job) == JOB_FIELDS for job in body["jobs"])
    assert next(job for job in body["jobs"] if job["job_id"] == "b")["fulfilled"] is True


async def test_slot_cap_leaves_job_unfulfilled_with_a_reason(
    aiohttp_client: ClientFactory,
) -> None:
    engine = make_engine(slots_per_taskmanager=2, max_slots=2)
    client = await aiohttp_client(make_app(engine))
    await client.put("/v1/jobs/j1/requirements", json={"slots": 4})
    await register_all(client, engine)

    body = await (await client.get("/v1/jobs/j1")).json()

    assert body["slots_allocated"] == 2
    assert body["fulfilled"] is False
    assert "slotmanager.number-of-slots.max" in body["unfulfilled_reason"]


# ---------------------------------------------------------------------------- long poll


async def test_long_poll_answers_as_soon_as_the_job_is_fulfilled(
    client: TestClient[Any, Any], engine: InMemoryEngine, background: Background
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 2})
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = background.start(client.get("/v1/jobs/j1", params={"wait": "25"}))
    # The poll is parked: it has not answered while nothing changed.
    done, _ = await asyncio.wait({poll}, timeout=0.2)
    assert not done

    await register_all(client, engine)
    response = await within(poll, seconds=10, what="the long poll to answer")

    assert response.status == 200
    assert (await response.json())["fulfilled"] is True
    assert loop.time() - started < 10  # far from the 25 s it was allowed


async def test_long_poll_runs_out_with_the_current_view(client: TestClient[Any, Any]) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 2})
    loop = asyncio.get_running_loop()
    started = loop.time()

    response = await client.get("/v1/jobs/j1", params={"wait": "0.3"})

    assert response.status == 200
    body = await response.json()
    assert body["fulfilled"] is False
    assert loop.time() - started >= 0.3


async def test_long_poll_on_fulfilled_job_answers_at_once(client: TestClient[Any, Any]) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 0})

    response = await within(client.get("/v1/jobs/j1?wait=25"), seconds=5, what="the answer")

    assert (await response.json())["fulfilled"] is True


async def test_long_poll_on_unknown_job_is_404_at_once(client: TestClient[Any, Any]) -> None:
    response = await within(client.get("/v1/jobs/ghost?wait=25"), seconds=5, what="the answer")

    assert response.status == 404


async def test_long_poll_of_a_job_deleted_meanwhile_is_404(
    client: TestClient[Any, Any], background: Background
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 2})
    poll = background.start(client.get("/v1/jobs/j1?wait=25"))
    done, _ = await asyncio.wait({poll}, timeout=0.2)
    assert not done

    assert (await client.delete("/v1/jobs/j1")).status == 204
    response = await within(poll, seconds=10, what="the long poll to answer")

    assert response.status == 404


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("wait=abc", 400),
        ("wait=", 400),
        ("wait=nan", 400),
        ("wait=inf", 400),
        ("wait=1&wait=2", 400),
        ("wait=-1", 422),
        ("wait=30.5", 422),  # the app's max_wait is 30
    ],
)
async def test_bad_wait_is_refused(client: TestClient[Any, Any], query: str, status: int) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 2})

    response = await client.get(f"/v1/jobs/j1?{query}")

    assert response.status == status
    problem = await response.json()
    assert problem["field"] == "wait"
    assert "wait" in problem["detail"]


# ---------------------------------------------------------------------------- validation

DEEP_JSON = b"[" * 20_000 + b"]" * 20_000


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{", 400, None),
        (b"", 400, None),
        (b"[]", 400, None),
        (b'"slots"', 400, None),
        (b"{}", 400, "slots"),
        (b'{"slots": "4"}', 400, "slots"),
        (b'{"slots": true}', 400, "slots"),
        (b'{"slots": 4.0}', 400, "slots"),
        (b'{"slots": 4.5}', 400, "slots"),
        (b'{"slots": null}', 400, "slots"),
        (b'{"slots": NaN}', 400, None),
        (b'{"slots": 1e400}', 400, "slots"),
        (b'{"slots": ' + b"9" * 5000 + b"}", 400, None),
        (b'{"slots": "\xff"}', 400, None),
        (DEEP_JSON, 400, None),
        (b'{"slots": -1}', 422, "slots"),
        (b'{"slots": 100001}', 422, "slots"),
    ],
)
async def test_bad_requirements_are_refused_and_change_nothing(
    client: TestClient[Any, Any],
    engine: InMemoryEngine,
    body: bytes,
    status: int,
    field: str | None,
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 2})
    jobs_before = engine.allocator.job_views()
    actions_before = list(engine.applied)

    response = await client.put(
        "/v1/jobs/j1/requirements", data=body, headers={"Content-Type": "application/json"}
    )

    assert response.status == status
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["status"] == status
    assert problem.get("field") == field
    assert FIX_HINT.search(problem["detail"]), problem["detail"]
    assert engine.allocator.job_views() == jobs_before
    assert engine.applied == actions_before


async def test_unknown_fields_are_ignored(client: TestClient[Any, Any]) -> None:
    response = await client.put(
        "/v1/jobs/j1/requirements", json={"slots": 2, "priority": "high", "extra": {"a": 1}}
    )

    assert response.status == 200
    assert (await response.json())["slots_required"] == 2


async def test_the_slot_cap_of_a_job_is_accepted(client: TestClient[Any, Any]) -> None:
    response = await client.put("/v1/jobs/j1/requirements", json={"slots": 100_000})

    assert response.status == 200


@pytest.mark.parametrize("job_id", ["a%20b", "x" * 129, "%C3%BC", "a%2Fb", "j:1"])
async def test_bad_job_ids_are_refused(
    client: TestClient[Any, Any], engine: InMemoryEngine, job_id: str
) -> None:
    responses = [
        await client.put(f"/v1/jobs/{job_id}/requirements", json={"slots": 1}),
        await client.get(f"/v1/jobs/{job_id}"),
        await client.delete(f"/v1/jobs/{job_id}"),
    ]

    for response in responses:
        assert response.status in (404, 422)
        assert response.content_type == "application/problem+json"
    # An id that reaches the handler is refused as invalid, not merely unknown.
    if "%2F" not in job_id:
        assert [response.status for response in responses] == [422, 422, 422]
        assert (await responses[0].json())["field"] == "job_id"
    assert engine.allocator.job_views() == []


async def test_longest_job_id_is_accepted(client: TestClient[Any, Any]) -> None:
    job_id = "A-z_0." + "x" * 122

    response = await client.put(f"/v1/jobs/{job_id}/requirements", json={"slots": 1})

    assert response.status == 200
    assert (await response.json())["job_id"] == job_id


async def test_body_over_64_kib_is_413_and_changes_nothing(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    body = b'{"slots": 2, "padding": "' + b"x" * (64 * 1024) + b'"}'

    response = await client.put(
        "/v1/jobs/j1/requirements", data=body, headers={"Content-Type": "application/json"}
    )

    assert response.status == 413
    assert response.content_type == "application/problem+json"
    assert "65536" in (await response.json())["detail"]
    assert engine.allocator.job_views() == []


@pytest.mark.parametrize("raw_id", [".", "..", "%2E", "%2E%2E", "%2e."])
async def test_dot_segments_sent_as_is_are_not_job_ids(
    client: TestClient[Any, Any], engine: InMemoryEngine, raw_id: str
) -> None:
    """Clients normalise '.' and '..' away; one that sends the request target as it is
    (curl --path-as-is, or percent-encoded dots) must not get a job named '..'."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        body = b'{"slots": 1}'
        writer.write(
            f"PUT /v1/jobs/{raw_id}/requirements HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = (await reader.readline()).decode()
    finally:
        writer.close()
    assert status_line.split()[1] in ("404", "405", "422"), status_line
    assert engine.allocator.job_views() == []


async def test_compact_view_has_counts_without_the_slot_list(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 4})
    await register_all(client, engine)

    full = await (await client.get("/v1/jobs/j1")).json()
    compact = await (await client.get("/v1/jobs/j1", params={"slots": "false"})).json()

    assert set(full) == JOB_FIELDS
    assert len(full["slots"]) == 4
    assert compact == {key: value for key, value in full.items() if key != "slots"}


async def test_slot_pages_together_are_the_full_listing(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 7})
    await register_all(client, engine)
    full = await (await client.get("/v1/jobs/j1")).json()

    pages: list[dict[str, Any]] = []
    params = {"slots_limit": "3"}
    while True:
        response = await client.get("/v1/jobs/j1", params=params)
        assert response.status == 200
        pages.append(await response.json())
        if pages[-1]["slots_next"] is None:
            break
        params = {"slots_limit": "3", "slots_after": pages[-1]["slots_next"]}

    assert [len(page["slots"]) for page in pages] == [3, 3, 1]
    assert [slot for page in pages for slot in page["slots"]] == full["slots"]
    for page in pages:  # every other field as in the full view
        rest = {key: value for key, value in page.items() if key not in ("slots", "slots_next")}
        assert rest == {key: value for key, value in full.items() if key != "slots"}
    exact = await (await client.get("/v1/jobs/j1", params={"slots_limit": "7"})).json()
    assert exact["slots"] == full["slots"]
    assert exact["slots_next"] is None


async def test_each_slot_page_has_its_own_etag(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 4})
    await register_all(client, engine)
    first = await client.get("/v1/jobs/j1", params={"slots_limit": "2"})
    after = (await first.json())["slots_next"]
    second = await client.get("/v1/jobs/j1", params={"slots_limit": "2", "slots_after": after})
    full = await client.get("/v1/jobs/j1")
    tags = {first.headers["ETag"], second.headers["ETag"], full.headers["ETag"]}
    assert len(tags) == 3
    again = await client.get(
        "/v1/jobs/j1",
        params={"slots_limit": "2", "slots_after": after},
        headers={"If-None-Match": second.headers["ETag"]},
    )
    assert again.status == 304


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("slots_limit=0", 422, "slots_limit"),
        ("slots_limit=10001", 422, "slots_limit"),
        ("slots_limit=two", 400, "slots_limit"),
        ("slots_limit=2&slots_limit=3", 400, "slots_limit"),
        ("slots_after=j1-taskmanager-1-1/0", 422, "slots_after"),
        ("slots_limit=2&slots_after=no-such-tm/0", 422, "slots_after"),
        ("slots_limit=2&slots=false", 422, "slots_limit"),
    ],
)
async def test_bad_slot_page_is_refused_naming_the_parameter(
    client: TestClient[Any, Any], engine: InMemoryEngine, query: str, status: int, field: str
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 2})
    await register_all(client, engine)
    response = await client.get(f"/v1/jobs/j1?{query}")
    assert response.status == status
    assert (await response.json())["field"] == field


@pytest.mark.parametrize("query", ["slots=no", "slots=", "slots=true&slots=false"])
async def test_bad_slots_flag_is_refused(client: TestClient[Any, Any], query: str) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 1})
    response = await client.get(f"/v1/jobs/j1?{query}")
    assert response.status == 400
    body = await response.json()
    assert body["field"] == "slots"
    assert "'false'" in body["detail"]


async def test_etag_answers_304_until_the_job_changes(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 2})
    for params in ({}, {"slots": "false"}):
        first = await client.get("/v1/jobs/j1", params=params)
        etag = first.headers["ETag"]
        again = await client.get("/v1/jobs/j1", params=params, headers={"If-None-Match": etag})
        assert again.status == 304
        assert again.headers["ETag"] == etag
        assert await again.read() == b""
    full_tag = (await client.get("/v1/jobs/j1")).headers["ETag"]
    compact_tag = (await client.get("/v1/jobs/j1?slots=false")).headers["ETag"]
    assert full_tag != compact_tag  # two representations, two tags

    await register_all(client, engine)  # slots allocated: the view changed
    changed = await client.get("/v1/jobs/j1", headers={"If-None-Match": full_tag})
    assert changed.status == 200
    assert changed.headers["ETag"] != full_tag
    assert (await changed.json())["fulfilled"] is True


async def test_etag_changes_when_only_the_reason_changes(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 2})
    (name,) = engine.start_requested_pods()
    before = await client.get("/v1/jobs/j1?slots=false")
    await client.put("/v1/jobs/j0/requirements", json={"slots": 0})  # nothing for j1
    same = await client.get(
        "/v1/jobs/j1?slots=false", headers={"If-None-Match": before.headers["ETag"]}
    )
    assert same.status == 304
    problem = PodObservation(name, node_name="n", waiting_problem=("ErrImagePull", "no such"))
    engine.apply(engine.allocator.pod_observed(problem))  # same slots, a new reason
    after = await client.get(
        "/v1/jobs/j1?slots=false", headers={"If-None-Match": before.headers["ETag"]}
    )
    assert after.status == 200
    assert "ErrImagePull" in (await after.json())["unfulfilled_reason"]
