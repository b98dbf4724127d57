"""Cross-cutting behaviour of the HTTP API: errors, authentication, operations routes, logs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from rmd.api.access_log import StructlogAccessLogger
from rmd.api.app import create_app
from rmd.core.model import Action
from tests.unit.api_fake_engine import InMemoryEngine, make_app, make_engine, make_metrics

ClientFactory = Any
ServerFactory = Any
TOKEN = "s3cret-token"


@pytest.fixture
def engine() -> InMemoryEngine:
    return make_engine()


@pytest.fixture
async def client(aiohttp_client: ClientFactory, engine: InMemoryEngine) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(engine))  # type: ignore[no-any-return]


@pytest.fixture
async def secured(aiohttp_client: ClientFactory, engine: InMemoryEngine) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(engine, auth_token=TOKEN))  # type: ignore[no-any-return]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------------- errors


async def test_unknown_route_is_a_404_problem(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v2/jobs")

    assert response.status == 404
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": problem["detail"],
    }
    assert "/openapi.json" in problem["detail"]


async def test_wrong_method_is_a_405_problem_with_allow(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/jobs/j1/requirements", json={"slots": 1})

    assert response.status == 405
    assert response.content_type == "application/problem+json"
    assert response.headers["Allow"] == "PUT"
    assert "use PUT" in (await response.json())["detail"]


class BrokenEdgeEngine(InMemoryEngine):
    """An engine whose Kubernetes edge fails: what an unexpected bug looks like to the API."""

    def apply(self, actions: Sequence[Action]) -> None:
        raise RuntimeError("edge exploded with secret internals")


async def test_unexpected_error_is_a_generic_500_and_is_logged(
    aiohttp_client: ClientFactory,
) -> None:
    engine = BrokenEdgeEngine(make_engine().allocator)
    client = await aiohttp_client(make_app(engine))

    with capture_logs() as logs:
        response = await client.put("/v1/jobs/j1/requirements", json={"slots": 1})

    assert response.status == 500
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["type"] == "urn:rmd:problem:internal-error"
    assert "secret internals" not in problem["detail"]
    request_id = response.headers["X-Request-Id"]
    [entry] = [log for log in logs if log["event"] == "request_failed"]
    assert entry["log_level"] == "error"
    assert entry["exc_info"] is True
    assert entry["path"] == "/v1/jobs/j1/requirements"
    assert len(request_id) == 16


async def test_request_id_is_echoed_when_sane_and_made_up_otherwise(
    client: TestClient[Any, Any],
) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    replaced = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith junk"})
    fresh = await client.get("/healthz")

    assert echoed.headers["X-Request-Id"] == "abc-123"
    assert replaced.headers["X-Request-Id"] not in ("", "bad id\twith junk")
    assert fresh.headers["X-Request-Id"] != replaced.headers["X-Request-Id"]


def test_an_empty_token_is_a_configuration_error(engine: InMemoryEngine) -> None:
    with pytest.raises(ValueError, match="empty"):
        make_app(engine, auth_token="  ")


@pytest.mark.parametrize("max_wait", [0.0, -1.0, float("inf"), float("nan")])
def test_max_wait_must_be_positive_and_finite(engine: InMemoryEngine, max_wait: float) -> None:
    with pytest.raises(ValueError, match="max_wait"):
        make_app(engine, max_wait=max_wait)


# ---------------------------------------------------------------------------- auth

V1_CALLS = [
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/j1"),
    ("PUT", "/v1/jobs/j1/requirements"),
    ("DELETE", "/v1/jobs/j1"),
    ("GET", "/v1/taskmanagers"),
    ("POST", "/v1/taskmanagers"),
    ("GET", "/v1/taskmanagers/flink-1-taskmanager-1-1"),
    ("PUT", "/v1/taskmanagers/flink-1-taskmanager-1-1/heartbeat"),
    ("DELETE", "/v1/taskmanagers/flink-1-taskmanager-1-1"),
    ("GET", "/v1/status"),
]


@pytest.mark.parametrize(("method", "path"), V1_CALLS)
async def test_v1_without_token_is_401(
    secured: TestClient[Any, Any], engine: InMemoryEngine, method: str, path: str
) -> None:
    response = await secured.request(method, path, json={"slots": 1})

    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in (await response.json())["detail"]
    assert engine.applied == []


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer tökén",
    ],
)
async def test_wrong_token_is_401(secured: TestClient[Any, Any], authorization: str) -> None:
    response = await secured.put(
        "/v1/jobs/j1/requirements",
        json={"slots": 1},
        headers={"Authorization": authorization.encode("utf-8").decode("latin-1")},
    )

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_right_token_is_let_through(secured: TestClient[Any, Any]) -> None:
    response = await secured.put(
        "/v1/jobs/j1/requirements", json={"slots": 1}, headers={"Authorization": f"bearer {TOKEN}"}
    )

    assert response.status == 200


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/openapi.json"])
async def test_operations_routes_stay_open(secured: TestClient[Any, Any], path: str) -> None:
    response = await secured.get(path)

    assert response.status == 200


async def test_without_a_configured_token_no_call_needs_one(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/status")

    assert response.status == 200


# ---------------------------------------------------------------------------- operations


async def test_readyz_follows_the_engine(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    engine.ready = False
    unready = await client.get("/readyz")
    engine.ready = True
    ready = await client.get("/readyz")

    assert unready.status == 503
    assert unready.content_type == "application/problem+json"
    assert (await unready.json())["type"] == "urn:rmd:problem:not-ready"
    assert ready.status == 200


async def test_readyz_stays_ready_and_says_when_pod_writes_go_unanswered(
    aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    unanswered: list[str] = []
    app = create_app(
        engine=engine,
        metrics=make_metrics(engine),
        kube_writes=lambda: unanswered[0] if unanswered else None,
    )
    client = await aiohttp_client(app)

    answered = await (await client.get("/readyz")).json()
    unanswered.append("the Kubernetes API server has not answered pod creates/deletes for 12 s")
    hanging = await client.get("/readyz")

    assert "kubernetes_writes" not in answered
    assert hanging.status == 200
    assert (await hanging.json())["kubernetes_writes"] == {
        "answered": False,
        "detail": unanswered[0],
    }


async def test_healthz_is_200_even_when_not_ready(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    engine.ready = False

    assert (await client.get("/healthz")).status == 200


async def test_status_counts(client: TestClient[Any, Any], engine: InMemoryEngine) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 3})
    [first, _second] = engine.start_requested_pods()
    engine.register(first, slots=2)

    body = await (await client.get("/v1/status")).json()

    assert body["taskmanagers"] == {"requested": 0, "pending": 1, "registered": 1, "releasing": 0}
    assert body["slots_total"] == 2
    assert body["slots_allocated"] == 2
    assert body["slots_free"] == 0
    assert body["jobs"] == 1
    assert body["pending_slot_demand"] == 1
    assert body["starts_throttled"] is False


async def test_metrics_are_served_in_prometheus_text(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    await client.put("/v1/jobs/j1/requirements", json={"slots": 3})

    response = await client.get("/metrics")

    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    assert "rmd_num_pending_taskmanagers 2.0" in text
    assert "rmd_pending_slot_demand 3.0" in text


async def test_metrics_negotiate_openmetrics(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )

    assert response.content_type == "application/openmetrics-text"
    assert (await response.text()).endswith("# EOF\n")


async def test_ready_gate_refuses_v1_until_the_first_pod_list_is_adopted(
    aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    engine.ready = engine.adopted = False
    app = create_app(
        engine=engine, metrics=make_metrics(engine), auth_token=TOKEN, refuse_v1_until_ready=True
    )
    client = await aiohttp_client(app)

    unauthenticated = await client.put("/v1/jobs/j1/requirements", json={"slots": 1})
    starting = await client.put(
        "/v1/jobs/j1/requirements", json={"slots": 1}, headers=bearer(TOKEN)
    )
    health = await client.get("/healthz")
    engine.ready = engine.adopted = True
    started = await client.put("/v1/jobs/j1/requirements", json={"slots": 1}, headers=bearer(TOKEN))

    assert unauthenticated.status == 401  # authentication comes first
    assert starting.status == 503
    assert starting.content_type == "application/problem+json"
    assert starting.headers["Retry-After"] == "1"
    assert (await starting.json())["type"] == "urn:rmd:problem:not-ready"
    assert health.status == 200
    assert started.status == 200
    assert [job.job_id for job in engine.allocator.job_views()] == ["j1"]


async def test_the_gate_stays_open_when_the_watch_loses_the_api_server_later(
    aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    """An API server outage after start-up unsyncs the watch (/readyz 503) but must not
    refuse heartbeats: agents refused past the heartbeat timeout would be lost (seen in the
    fault matrix's kube-apiserver restart: every TaskManager lost after 10 s of 503s)."""
    app = create_app(engine=engine, metrics=make_metrics(engine), refuse_v1_until_ready=True)
    client = await aiohttp_client(app)
    await client.put("/v1/jobs/j1/requirements", json={"slots": 1})
    [pod] = engine.start_requested_pods()
    registration = {"taskmanager_id": pod, "address": "10.0.0.7:6122", "slots": 1}
    assert (await client.post("/v1/taskmanagers", json=registration)).status == 200
    engine.ready = False  # the watch lost the API server; adopted stays true

    heartbeat = await client.put(f"/v1/taskmanagers/{pod}/heartbeat", json={})
    readyz = await client.get("/readyz")

    assert heartbeat.status == 200
    assert readyz.status == 503


async def test_without_the_gate_v1_serves_while_not_ready(
    client: TestClient[Any, Any], engine: InMemoryEngine
) -> None:
    engine.ready = False

    response = await client.put("/v1/jobs/j1/requirements", json={"slots": 1})

    assert response.status == 200


# ---------------------------------------------------------------------------- access log


class CountingAccessLogger(StructlogAccessLogger):
    """The real access logger, plus a signal: aiohttp logs after the response has gone out."""

    lines_logged: asyncio.Queue[int] | None = None

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        super().log(request, response, time)
        if CountingAccessLogger.lines_logged is not None:
            CountingAccessLogger.lines_logged.put_nowait(response.status)


async def test_access_log_is_structured(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    CountingAccessLogger.lines_logged = asyncio.Queue()
    server = await aiohttp_server(make_app(engine), access_log_class=CountingAccessLogger)
    client = await aiohttp_client(server)

    with capture_logs() as logs:
        response = await client.put(
            "/v1/jobs/j1/requirements", json={"slots": 1}, headers={"X-Request-Id": "req-7"}
        )
        await response.read()
        await (await client.get("/healthz")).read()
        async with asyncio.timeout(5):
            for _ in range(2):
                await CountingAccessLogger.lines_logged.get()

    [put, probe] = [log for log in logs if log["event"] == "http_request"]
    assert put["method"] == "PUT"
    assert put["path"] == "/v1/jobs/j1/requirements"
    assert put["status"] == 200
    assert put["request_id"] == "req-7"
    assert put["log_level"] == "info"
    assert put["duration_ms"] >= 0
    assert probe["path"] == "/healthz"
    assert probe["log_level"] == "debug"


async def test_successful_heartbeats_are_logged_at_debug_failed_ones_at_info(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, engine: InMemoryEngine
) -> None:
    CountingAccessLogger.lines_logged = asyncio.Queue()
    server = await aiohttp_server(make_app(engine), access_log_class=CountingAccessLogger)
    client = await aiohttp_client(server)
    engine.apply(engine.allocator.declare("j1", 1))
    (name,) = engine.start_requested_pods()
    engine.register(name, slots=2)

    with capture_logs() as logs:
        await (await client.put(f"/v1/taskmanagers/{name}/heartbeat", json={})).read()
        await (await client.put("/v1/taskmanagers/gone-tm/heartbeat", json={})).read()
        async with asyncio.timeout(5):
            for _ in range(2):
                await CountingAccessLogger.lines_logged.get()

    [ok, missing] = [log for log in logs if log["event"] == "http_request"]
    assert (ok["status"], ok["log_level"]) == (200, "debug")
    assert (missing["status"], missing["log_level"]) == (404, "info")
