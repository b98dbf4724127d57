"""Serving the application: the HTTP server's connection timeouts, and the errors aiohttp
answers below the middlewares (a request its parser refuses) as problem+json.

aiohttp has no hook for the response to a request its parser refuses (aio-libs/aiohttp#3287
is open): ``RequestHandler.handle_error`` builds a text/plain 400 before any middleware could
run. :class:`ApiRunner` therefore serves with a ``RequestHandler`` whose ``handle_error``
answers problem+json, logs one warning line without the raw request (it may carry the bearer
token) and closes the connection, as aiohttp does. ``tests/unit/test_api_server.py`` pins it
against the aiohttp version installed.

Timeouts (aiohttp's own keep-alive timer, which runs from the moment a connection is
accepted and again after each response, closes a connection that sits idle — no request, or
headers still being trickled — for ``idle_timeout``; the body read of a request is bounded by
the application, :mod:`rmd.api.body`).
"""

from __future__ import annotations

import structlog
from aiohttp import http_exceptions, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from rmd.api.problems import MALFORMED_REQUEST, http_problem_kind, problem_response

__all__ = ["IDLE_TIMEOUT", "LINGERING_TIME", "ApiRunner"]

log = structlog.get_logger("rmd.api")

# A connection with no request in flight is closed after this long. Above the longest
# heartbeat.interval agents use by default (10 s), so their connections are reused.
IDLE_TIMEOUT = 60.0
# After answering a request whose body did not arrive whole (408, 413), read and drop what
# still comes for at most this long before closing (aiohttp's default is 10 s).
LINGERING_TIME = 2.0

# What a parser error means, in words, without echoing the request (it may hold a token).
_PARSER_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header line is too long"),
    (http_exceptions.BadHttpMethod, "the request method is not a valid HTTP method"),
    (http_exceptions.BadStatusLine, "the request line is not 'METHOD /path HTTP/1.1'"),
    (http_exceptions.InvalidURLError, "the request target is not a valid URL path"),
    (http_exceptions.InvalidHeader, "a header name or value is malformed"),
    (http_exceptions.PayloadEncodingError, "the body's framing or encoding is broken"),
)


def parser_error_detail(exc: BaseException | None) -> str:
    """The problem's detail for a request aiohttp's parser refused."""
    what = "a header or the request line is malformed (e.g. a control character in a value)"
    for error_type, meaning in _PARSER_ERRORS:
        if isinstance(exc, error_type):
            what = meaning
            break
    return f"The request is not valid HTTP/1.1: {what}. Fix the client; see /openapi.json."


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors as problem+json."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            # aiohttp logs these with their traceback (and refuses when a response was sent
            # already); only the body of the answer changes.
            super().handle_error(request, status, exc, message)
            detail = (
                "The daemon failed to handle this request; its log has the details. Retry, "
                "and report it if it persists."
            )
            kind = http_problem_kind(status)
        else:
            log.warning(
                "malformed_request",
                status=status,
                remote=request.remote,
                error=type(exc).__name__ if exc is not None else None,
            )
            detail = parser_error_detail(exc)
            kind = MALFORMED_REQUEST if status == 400 else http_problem_kind(status)
        response = problem_response(kind, detail)
        response.force_close()
        return response


class _ProblemServer(web.Server):
    """aiohttp's low-level server, making :class:`ProblemRequestHandler` connections."""

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` for the daemon's API: problem+json for aiohttp's own errors, idle
    connections closed after ``idle_timeout`` seconds."""

    def __init__(
        self,
        app: web.Application,
        *,
        access_log_class: type[AbstractAccessLogger],
        shutdown_timeout: float,
        idle_timeout: float = IDLE_TIMEOUT,
        lingering_time: float = LINGERING_TIME,
    ) -> None:
        if not idle_timeout > 0:
            raise ValueError(
                f"idle_timeout must be a positive number of seconds, not {idle_timeout!r}"
            )
        super().__init__(
            app,
            access_log_class=access_log_class,
            shutdown_timeout=shutdown_timeout,
            keepalive_timeout=idle_timeout,
            lingering_time=lingering_time,
        )

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _ProblemServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **made._kwargs,  # the connection options aiohttp collected for the runner
        )
