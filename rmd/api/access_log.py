"""A structured (structlog) access log line per request.

aiohttp takes the access logger from the runner, not the application, so whoever serves the
app passes it: ``web.AppRunner(app, access_log_class=StructlogAccessLogger)`` or
``web.run_app(app, access_log_class=StructlogAccessLogger)``.
"""

from __future__ import annotations

import logging

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from rmd.api.middleware import REQUEST_ID_HEADER

__all__ = ["QUIET_PATHS", "StructlogAccessLogger"]

# Probes, scrapes and heartbeats arrive every few seconds (heartbeats: one per TaskManager
# per heartbeat.interval): logged at debug level only when they succeed.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _is_quiet(request: web.BaseRequest) -> bool:
    path = request.path
    return path in QUIET_PATHS or (
        request.method == "PUT"
        and path.startswith("/v1/taskmanagers/")
        and path.endswith("/heartbeat")
    )


_log = structlog.get_logger("rmd.api.access")


class StructlogAccessLogger(AbstractAccessLogger):
    """aiohttp makes one per connection. Whether debug lines are wanted is asked once per
    connection, at its first quiet request: asking structlog's lazy logger binds a new
    logger each time (about 10 µs, as much as the rest of a heartbeat's logging)."""

    _debug_wanted: bool | None = None

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        quiet = response.status < 400 and _is_quiet(request)
        if quiet:
            if self._debug_wanted is None:
                self._debug_wanted = _log.is_enabled_for(logging.DEBUG)
            if not self._debug_wanted:
                return  # hundreds a second at scale: not even the fields are built
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 3),
            "response_bytes": response.body_length,
            "remote": request.remote,
            "request_id": response.headers.get(REQUEST_ID_HEADER),
            "user_agent": request.headers.get("User-Agent"),
        }
        if quiet:
            _log.debug("http_request", **fields)
        else:
            _log.info("http_request", **fields)
