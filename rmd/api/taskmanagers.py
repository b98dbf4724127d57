"""TaskManager side: registration and heartbeats (API.md, ``/v1/taskmanagers``)."""

from __future__ import annotations

from aiohttp import web

from rmd.api import serialize
from rmd.api.body import read_json_object
from rmd.api.keys import ENGINE
from rmd.api.responses import json_ok, no_content
from rmd.api.validation import (
    TASKMANAGER_SLOTS_MAX,
    check_slot_report_fits,
    parse_address,
    parse_slot_report,
    parse_taskmanager_id,
    require_field_str,
    require_int,
)

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.post("/v1/taskmanagers")
async def register(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    taskmanager_id = parse_taskmanager_id(
        require_field_str(body, "taskmanager_id", meaning="the TaskManager's pod name")
    )
    address = parse_address(body)
    slots = require_int(body, "slots", minimum=1, maximum=TASKMANAGER_SLOTS_MAX)
    engine = request.app[ENGINE]
    engine.apply(engine.allocator.register(taskmanager_id, address=address, slots=slots))
    return json_ok(serialize.taskmanager_json(engine.allocator.taskmanager_view(taskmanager_id)))


@routes.put("/v1/taskmanagers/{taskmanager_id}/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    taskmanager_id = parse_taskmanager_id(request.match_info["taskmanager_id"])
    report = parse_slot_report(
        await read_json_object(request, empty_means={}), taskmanager_id=taskmanager_id
    )
    engine = request.app[ENGINE]
    if report:  # an unknown TaskManager: 404, as the heartbeat itself would answer
        slots_total = engine.allocator.taskmanager_view(taskmanager_id).slots_total
        check_slot_report_fits(report, slots_total=slots_total)
    actions = engine.allocator.heartbeat(taskmanager_id)
    if actions:  # a heartbeat only moves a deadline later: usually nothing to carry out
        engine.apply(actions)
    return json_ok(serialize.taskmanager_json(engine.allocator.taskmanager_view(taskmanager_id)))


@routes.delete("/v1/taskmanagers/{taskmanager_id}")
async def deregister(request: web.Request) -> web.Response:
    taskmanager_id = parse_taskmanager_id(request.match_info["taskmanager_id"])
    engine = request.app[ENGINE]
    engine.apply(engine.allocator.deregister(taskmanager_id))
    return no_content()


@routes.get("/v1/taskmanagers/{taskmanager_id}")
async def get_taskmanager(request: web.Request) -> web.Response:
    taskmanager_id = parse_taskmanager_id(request.match_info["taskmanager_id"])
    view = request.app[ENGINE].allocator.taskmanager_view(taskmanager_id)
    return json_ok(serialize.taskmanager_json(view))


@routes.get("/v1/taskmanagers")
async def list_taskmanagers(request: web.Request) -> web.Response:
    views = request.app[ENGINE].allocator.taskmanager_views()
    return json_ok({"taskmanagers": [serialize.taskmanager_json(view) for view in views]})
