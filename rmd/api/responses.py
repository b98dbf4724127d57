"""Successful JSON answers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

__all__ = ["json_ok", "no_content"]


def json_ok(document: dict[str, Any]) -> web.Response:
    return web.Response(text=json.dumps(document), content_type="application/json")


def no_content() -> web.Response:
    return web.Response(status=204)
