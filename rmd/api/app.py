"""The HTTP application: API.md's routes, /metrics and /openapi.json, with their middlewares."""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib import resources

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from rmd.api import heartbeat_channel, jobs, operations, taskmanagers
from rmd.api.keys import (
    AUTH_TOKEN,
    BODY_TIMEOUT,
    CHANNEL_IDLE_TIMEOUT,
    CHANNELS,
    ENGINE,
    FLINK_STATUS,
    KUBE_WRITES,
    LEADERSHIP,
    MAX_WAIT,
    METRICS,
    OPENAPI_DOCUMENT,
    STATE_STORED,
)
from rmd.api.middleware import (
    auth_middleware,
    leader_gate_middleware,
    problem_middleware,
    ready_gate_middleware,
    request_id_middleware,
)
from rmd.api.open_channels import OpenChannels
from rmd.api.ports import Engine, Leadership, StateStored
from rmd.api.server import IDLE_TIMEOUT
from rmd.api.tokens import BearerTokens
from rmd.api.validation import MAX_BODY_BYTES
from rmd.core.clock import SystemClock
from rmd.flink.status import FollowerStatus
from rmd.metrics import RmdMetrics

__all__ = ["BODY_TIMEOUT_SECONDS", "create_app", "openapi_document"]

# A request body (a small JSON object) must arrive whole within this; else 408.
BODY_TIMEOUT_SECONDS = 10.0


def openapi_document() -> bytes:
    """The OpenAPI 3 document kept in the package (rmd/api/openapi.json)."""
    return resources.files("rmd.api").joinpath("openapi.json").read_bytes()


def create_app(
    *,
    engine: Engine,
    metrics: RmdMetrics,
    auth_token: str | None = None,
    auth_tokens: BearerTokens | None = None,
    max_wait: float = 300.0,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    refuse_v1_until_ready: bool = False,
    flink_status: Callable[[], FollowerStatus] | None = None,
    state_stored: StateStored | None = None,
    leadership: Leadership | None = None,
    kube_writes: Callable[[], str | None] | None = None,
    channel_idle_timeout: float = IDLE_TIMEOUT,
) -> web.Application:
    """The daemon's HTTP application.

    ``auth_token``: when set, every path except /metrics, /healthz, /readyz and /openapi.json
    needs ``Authorization: Bearer <auth_token>``; ``auth_tokens`` instead: the tokens of
    ``rmd.auth.token-file``, taken again when it changes (:mod:`rmd.api.tokens`).
    ``max_wait``: the longest long poll (``GET /v1/jobs/{id}?wait=``) in seconds.
    ``body_timeout``: a request body not received whole within this many seconds is answered
    408 and its connection closed.
    ``refuse_v1_until_ready``: answer every /v1 call (after authentication) with 503 +
    Retry-After until ``engine.adopted`` (the first pod list adopted).
    ``flink_status``: the Flink follower's status, shown by /readyz; ``kube_writes``: why
    the API server leaves pod writes unanswered (None: it answers them), shown by /readyz.
    ``state_stored``: job declarations and removals are answered only once it says the
    state holding them is stored (503 ``not-stored`` when it cannot be; the change stays in
    effect). ``leadership``: with high availability, a standby answers /v1 with 503 and the
    leader's address.
    ``channel_idle_timeout``: a heartbeat channel with no frame for this many seconds is
    closed (:mod:`rmd.api.heartbeat_channel`).
    Serve it with ``access_log_class=rmd.api.access_log.StructlogAccessLogger`` for
    structured access logs, and with :class:`rmd.api.server.ApiRunner` for problem+json on
    requests aiohttp's parser refuses and for idle connections being closed.
    """
    if auth_token is not None and not auth_token.strip():
        raise ValueError("the bearer token is empty: give a token or None for no authentication")
    if not (math.isfinite(max_wait) and max_wait > 0):
        raise ValueError(f"max_wait must be a positive number of seconds, not {max_wait!r}")
    if not (math.isfinite(body_timeout) and body_timeout > 0):
        raise ValueError(f"body_timeout must be a positive number of seconds, not {body_timeout!r}")
    middlewares = [request_id_middleware, problem_middleware, auth_middleware]
    if leadership is not None:
        middlewares.append(leader_gate_middleware)
    if refuse_v1_until_ready:
        middlewares.append(ready_gate_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[ENGINE] = engine
    app[METRICS] = metrics
    if auth_tokens is None and auth_token is not None:
        auth_tokens = BearerTokens(auth_token, clock=SystemClock())
    app[AUTH_TOKEN] = auth_tokens
    app[MAX_WAIT] = float(max_wait)
    app[BODY_TIMEOUT] = float(body_timeout)
    app[OPENAPI_DOCUMENT] = openapi_document()
    app[FLINK_STATUS] = flink_status
    app[STATE_STORED] = state_stored
    app[LEADERSHIP] = leadership
    app[KUBE_WRITES] = kube_writes
    app.add_routes(jobs.routes)
    app.add_routes(taskmanagers.routes)
    app.add_routes(heartbeat_channel.routes)
    app[CHANNELS] = OpenChannels(clock=SystemClock())
    app[CHANNEL_IDLE_TIMEOUT] = float(channel_idle_timeout)
    app.cleanup_ctx.append(heartbeat_channel.channel_housekeeping)
    app.on_shutdown.append(heartbeat_channel.close_channels_on_shutdown)
    app.add_routes(operations.routes)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    return app
