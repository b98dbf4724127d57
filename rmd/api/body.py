"""Reading a request body as a JSON object (size limit enforced by the application)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rmd.api.validation import parse_json_object

__all__ = ["read_json_object"]


async def read_json_object(
    request: web.Request, *, empty_means: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The body as a JSON object; raises ProblemError (400) or HTTPRequestEntityTooLarge (413)."""
    raw = await request.read()
    return parse_json_object(raw, empty_means=empty_means)
