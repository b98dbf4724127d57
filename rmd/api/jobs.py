"""JobMaster side: declarative slot requirements (API.md, ``/v1/jobs``)."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import hdrs, web

from rmd.api import serialize
from rmd.api.body import read_json_object
from rmd.api.keys import ENGINE, MAX_WAIT, STATE_STORED
from rmd.api.problems import INVALID_VALUE, NOT_STORED, ProblemError
from rmd.api.responses import json_ok, no_content
from rmd.api.validation import (
    JOB_SLOTS_MAX,
    SlotPage,
    parse_job_id,
    parse_slot_page,
    parse_slots_flag,
    parse_wait,
    require_int,
)
from rmd.core.model import SlotView, UnknownJob

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.put("/v1/jobs/{job_id}/requirements")
async def put_requirements(request: web.Request) -> web.Response:
    job_id = parse_job_id(request.match_info["job_id"])
    body = await read_json_object(request)
    slots = require_int(body, "slots", minimum=0, maximum=JOB_SLOTS_MAX)
    engine = request.app[ENGINE]
    engine.apply(engine.allocator.declare(job_id, slots))
    await _stored(request, what=f"job {job_id}'s requirement of {slots} slots")
    return json_ok(serialize.job_json(engine.allocator.job_view(job_id)))


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    """The JobView; ``?slots=false`` without the slot list (cheap at any size); an ``ETag``,
    and ``If-None-Match`` with it answers 304; ``?wait=`` long-polls until fulfilled, woken
    only by changes of this job."""
    job_id = parse_job_id(request.match_info["job_id"])
    wait = parse_wait(request.query.getall("wait", []), max_wait=request.app[MAX_WAIT])
    with_slots = parse_slots_flag(request.query.getall("slots", []))
    page = parse_slot_page(
        request.query.getall("slots_limit", []), request.query.getall("slots_after", [])
    )
    if page is not None and not with_slots:
        raise ProblemError(
            INVALID_VALUE,
            "slots=false lists no slots, so there is nothing to page: leave out "
            "'slots_limit' and 'slots_after', or ask with slots=true.",
            field="slots_limit",
        )
    engine = request.app[ENGINE]
    allocator = engine.allocator
    summary = allocator.job_summary(job_id)  # unknown job: 404 at once
    if wait and not summary.fulfilled:

        def fulfilled_or_gone() -> bool:
            try:
                return allocator.job_fulfilled(job_id)
            except UnknownJob:
                return True

        await engine.wait_for_job(job_id, fulfilled_or_gone, timeout=wait)
        summary = allocator.job_summary(job_id)  # deleted meanwhile: 404
    etag = serialize.job_etag(
        summary,
        slots=with_slots,
        page=None if page is None else (page.limit, page.after),
    )
    if _matches(request.headers.get(hdrs.IF_NONE_MATCH), etag):
        return web.Response(status=304, headers={hdrs.ETAG: etag})
    if page is not None:
        view = allocator.job_view(job_id)
        slots, slots_next = _slot_page(view.slots, page)
        document = serialize.job_json(replace(view, slots=slots))
        document["slots_next"] = slots_next
    elif with_slots:
        document = serialize.job_json(allocator.job_view(job_id))
    else:
        document = serialize.job_summary_json(summary)
    response = json_ok(document)
    response.headers[hdrs.ETAG] = etag
    return response


def _slot_page(
    slots: tuple[SlotView, ...], page: SlotPage
) -> tuple[tuple[SlotView, ...], str | None]:
    """The slots of one page and the ``slots_after`` of the next (None: this is the last)."""
    start = 0
    if page.after is not None:
        ids = [slot.slot_id for slot in slots]
        if page.after not in ids:
            raise ProblemError(
                INVALID_VALUE,
                f"The query parameter 'slots_after' names no slot of this job "
                f"({page.after[:80]!r}): the slot was freed since the previous page, or the "
                "id is wrong. Page again from the first (leave 'slots_after' out).",
                field="slots_after",
            )
        start = ids.index(page.after) + 1
    chosen = slots[start : start + page.limit]
    more = start + page.limit < len(slots)
    return chosen, chosen[-1].slot_id if more and chosen else None


def _matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match names ``etag`` (weak comparison, as RFC 9110 asks for it) or is ``*``."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


@routes.delete("/v1/jobs/{job_id}")
async def delete_job(request: web.Request) -> web.Response:
    job_id = parse_job_id(request.match_info["job_id"])
    engine = request.app[ENGINE]
    engine.apply(engine.allocator.remove_job(job_id))
    await _stored(request, what=f"the removal of job {job_id}")
    return no_content()


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    views = request.app[ENGINE].allocator.job_views()
    return json_ok({"jobs": [serialize.job_json(view) for view in views]})


async def _stored(request: web.Request, *, what: str) -> None:
    """Answer a change only once the state holding it is stored (it then survives a restart
    of the daemon); 503 when it cannot be — the change is in effect all the same."""
    state_stored = request.app[STATE_STORED]
    if state_stored is None or await state_stored():
        return
    raise ProblemError(
        NOT_STORED,
        f"{what} is in effect but could not be stored in the Kubernetes API server (it is "
        "unreachable or refuses the write), so it would not survive a restart of rmd; send "
        "the same request again",
        headers={"Retry-After": "2"},
    )
