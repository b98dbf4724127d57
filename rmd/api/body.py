"""Reading a request body as a JSON object (size limit enforced by the application, time
limit here: a body trickled in slowly holds a connection and a handler)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from rmd.api.keys import BODY_TIMEOUT
from rmd.api.problems import REQUEST_TIMEOUT, ProblemError
from rmd.api.validation import parse_json_object

__all__ = ["read_json_object"]


async def read_json_object(
    request: web.Request, *, empty_means: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The body as a JSON object; raises ProblemError (400, or 408 when the whole body has not
    arrived within the application's body timeout) or HTTPRequestEntityTooLarge (413)."""
    if request.content.is_eof():  # the whole body is in (as usual for small ones): no timer
        return parse_json_object(await request.read(), empty_means=empty_means)
    timeout = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise ProblemError(
            REQUEST_TIMEOUT,
            f"The request body did not arrive within {timeout:g} s: send the whole body at "
            "once (bodies are small JSON objects).",
        ) from None
    return parse_json_object(raw, empty_means=empty_means)
