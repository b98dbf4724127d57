"""Operations: health, readiness, status counts, metrics, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from rmd.api import serialize
from rmd.api.keys import ENGINE, FLINK_STATUS, KUBE_WRITES, LEADERSHIP, OPENAPI_DOCUMENT
from rmd.api.problems import NOT_READY, ProblemError
from rmd.api.responses import json_ok

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_ok({"status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    if not request.app[ENGINE].ready:
        raise ProblemError(
            NOT_READY,
            "The daemon is not ready: the TaskManager pod watch has not synced yet. Retry "
            "shortly; if it stays unready, check the daemon's log for Kubernetes API errors.",
            headers={"Retry-After": "1"},
        )
    body: dict[str, object] = {"status": "ready"}
    flink_status = request.app[FLINK_STATUS]
    if flink_status is not None:
        # Ready even while Flink cannot be read: the TaskManagers still need rmd (and the
        # last demand is kept); the detail says what rmd does meanwhile.
        body["flink"] = flink_status().as_json()
    leadership = request.app[LEADERSHIP]
    if leadership is not None:
        # A standby is ready too (warm, and it sends clients to the leader): a Deployment's
        # rolling update waits for new pods to be ready, and a new pod starts as a standby.
        body["leader"] = {"is_leader": leadership.is_leader, "leader_url": leadership.leader_url}
    kube_writes = request.app[KUBE_WRITES]
    unanswered = None if kube_writes is None else kube_writes()
    if unanswered is not None:
        # Ready all the same: heartbeats, registrations and declarations are served, the
        # running TaskManagers need rmd; an unready JobManager pod would also lose its
        # Services' traffic (Flink's RPC and REST) for a fault that does not touch them.
        body["kubernetes_writes"] = {"answered": False, "detail": unanswered}
    return json_ok(body)


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    return json_ok(serialize.status_json(request.app[ENGINE].allocator.status()))


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_DOCUMENT], content_type="application/json")
