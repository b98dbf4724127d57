"""Typed keys of the application's state (plain string keys warn in aiohttp ≥ 3.9)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from rmd.api.ports import Engine, Leadership, StateStored
from rmd.flink.status import FollowerStatus
from rmd.metrics import RmdMetrics

__all__ = [
    "AUTH_TOKEN",
    "ENGINE",
    "FLINK_STATUS",
    "LEADERSHIP",
    "MAX_WAIT",
    "METRICS",
    "OPENAPI_DOCUMENT",
    "STATE_STORED",
]

ENGINE = web.AppKey("rmd_engine", Engine)
METRICS = web.AppKey("rmd_metrics", RmdMetrics)
# The bearer token required on every path but the open ones; None = no authentication.
AUTH_TOKEN: web.AppKey[bytes | None] = web.AppKey("rmd_auth_token")
# The longest ``?wait=`` a client may ask for, in seconds.
MAX_WAIT = web.AppKey("rmd_max_wait", float)
# The OpenAPI document as served (bytes of rmd/api/openapi.json).
OPENAPI_DOCUMENT = web.AppKey("rmd_openapi_document", bytes)
# How the Flink follower does (rmd.flink.rest-url), shown by /readyz; None = not following.
FLINK_STATUS: web.AppKey[Callable[[], FollowerStatus] | None] = web.AppKey("rmd_flink_status")
# Declarations are answered once the state holding them is stored; None = nothing is stored.
STATE_STORED: web.AppKey[StateStored | None] = web.AppKey("rmd_state_stored")
# Who leads (high availability); None = one daemon, always the leader.
LEADERSHIP: web.AppKey[Leadership | None] = web.AppKey("rmd_leadership")
