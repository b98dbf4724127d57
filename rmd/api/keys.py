"""Typed keys of the application's state (plain string keys warn in aiohttp ≥ 3.9)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from rmd.api.open_channels import OpenChannels
from rmd.api.ports import Engine, Leadership, StateStored
from rmd.api.tokens import BearerTokens
from rmd.flink.status import FollowerStatus
from rmd.metrics import RmdMetrics

__all__ = [
    "AUTH_TOKEN",
    "BODY_TIMEOUT",
    "CHANNELS",
    "CHANNEL_IDLE_TIMEOUT",
    "ENGINE",
    "FLINK_STATUS",
    "KUBE_WRITES",
    "LEADERSHIP",
    "MAX_WAIT",
    "METRICS",
    "OPENAPI_DOCUMENT",
    "STATE_STORED",
]

ENGINE = web.AppKey("rmd_engine", Engine)
METRICS = web.AppKey("rmd_metrics", RmdMetrics)
# The bearer tokens accepted on every path but the open ones; None = no authentication.
AUTH_TOKEN: web.AppKey[BearerTokens | None] = web.AppKey("rmd_auth_token")
# How long a request body may take to arrive whole, in seconds.
BODY_TIMEOUT = web.AppKey("rmd_body_timeout", float)
# The longest ``?wait=`` a client may ask for, in seconds.
MAX_WAIT = web.AppKey("rmd_max_wait", float)
# The OpenAPI document as served (bytes of rmd/api/openapi.json).
OPENAPI_DOCUMENT = web.AppKey("rmd_openapi_document", bytes)
# Why pod writes go unanswered (a sentence), or None while the API server answers them.
KUBE_WRITES: web.AppKey[Callable[[], str | None] | None] = web.AppKey("rmd_kube_writes")
# How the Flink follower does (rmd.flink.rest-url), shown by /readyz; None = not following.
FLINK_STATUS: web.AppKey[Callable[[], FollowerStatus] | None] = web.AppKey("rmd_flink_status")
# Declarations are answered once the state holding them is stored; None = nothing is stored.
STATE_STORED: web.AppKey[StateStored | None] = web.AppKey("rmd_state_stored")
# Who leads (high availability); None = one daemon, always the leader.
LEADERSHIP: web.AppKey[Leadership | None] = web.AppKey("rmd_leadership")
# The open heartbeat channels (rmd.api.heartbeat_channel) and when each last heard a frame.
CHANNELS: web.AppKey[OpenChannels[web.WebSocketResponse]] = web.AppKey("rmd_heartbeat_channels")
# A heartbeat channel silent for this many seconds is closed.
CHANNEL_IDLE_TIMEOUT = web.AppKey("rmd_channel_idle_timeout", float)
