"""Middlewares, outermost first: request id, problem+json errors, bearer-token authentication,
and (optionally) the readiness gate on /v1."""

from __future__ import annotations

import hmac
import re
import secrets

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from rmd.api.keys import AUTH_TOKEN, ENGINE, LEADERSHIP
from rmd.api.ports import Leadership
from rmd.api.problems import (
    BODY_TOO_LARGE,
    CONFLICT,
    INTERNAL_ERROR,
    NOT_LEADER,
    NOT_READY,
    REGISTRATION_REFUSED,
    UNAUTHORIZED,
    UNKNOWN_JOB,
    UNKNOWN_TASKMANAGER,
    ProblemError,
    ProblemKind,
    http_problem_kind,
    problem_response,
)
from rmd.api.tokens import BearerTokens
from rmd.api.validation import MAX_BODY_BYTES
from rmd.core.model import (
    CoreError,
    RegistrationRefused,
    SlotCountMismatch,
    UnknownJob,
    UnknownTaskManager,
)

__all__ = [
    "OPEN_PATHS",
    "REQUEST_ID_HEADER",
    "auth_middleware",
    "check_bearer_token",
    "check_leader",
    "core_error_problem",
    "leader_gate_middleware",
    "offered_bearer_token",
    "problem_middleware",
    "ready_gate_middleware",
    "request_id_middleware",
]

log = structlog.get_logger("rmd.api")

REQUEST_ID_HEADER = "X-Request-Id"
# Paths served without a token; every other path needs one when a token is configured.
OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/openapi.json"})

_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Headers of an aiohttp HTTPException that still mean something on the problem response.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")
_CORE_ERROR_KINDS: tuple[tuple[type[CoreError], ProblemKind], ...] = (
    (UnknownJob, UNKNOWN_JOB),
    (UnknownTaskManager, UNKNOWN_TASKMANAGER),
    (RegistrationRefused, REGISTRATION_REFUSED),
    (SlotCountMismatch, CONFLICT),
)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tag the request (the client's X-Request-Id if sane, else a new one) for every log line."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = offered if _CLIENT_REQUEST_ID.fullmatch(offered) else secrets.token_hex(8)
    # bind + reset, not bound_contextvars(): the same, without a generator context manager
    # (a quarter of the cost, on every request)
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes application/problem+json; unexpected ones are logged as 500s."""
    try:
        return await handler(request)
    except ProblemError as problem:
        return problem_response(
            problem.kind,
            problem.detail,
            field=problem.field,
            headers=problem.headers,
            extensions=problem.extensions,
        )
    except CoreError as error:
        refusal = core_error_problem(error)
        return problem_response(refusal.kind, refusal.detail)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _http_error_response(request, error)
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return problem_response(
            INTERNAL_ERROR,
            "The daemon failed to handle this request; its log has the details under this "
            f"request's id ({REQUEST_ID_HEADER} header). Retry, and report it if it persists.",
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """When a token is configured, require ``Authorization: Bearer <token>`` off OPEN_PATHS."""
    tokens = request.app[AUTH_TOKEN]
    if tokens is None or request.path in OPEN_PATHS:
        return await handler(request)
    check_bearer_token(tokens, offered_bearer_token(request.headers.get("Authorization", "")))
    return await handler(request)


def offered_bearer_token(authorization: str) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None without one."""
    scheme, _, offered = authorization.partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        return None
    return offered.strip().encode("utf-8")


def check_bearer_token(tokens: BearerTokens, given: bytes | None) -> None:
    """Raise the 401 problem unless ``given`` is one of the accepted tokens (the heartbeat
    channel asks this again for every frame, so a rotated-out token ends it as it would
    end HTTP heartbeats)."""
    if given is None:
        raise ProblemError(
            UNAUTHORIZED,
            "This call needs a bearer token: send 'Authorization: Bearer <token>' with the "
            "token from the file named by rmd.auth.token-file.",
            headers={"WWW-Authenticate": 'Bearer realm="rmd"'},
        )
    # every accepted token compared, so the time taken does not say which one came close
    matches = [hmac.compare_digest(given, token) for token in tokens.accepted()]
    if not any(matches):
        raise ProblemError(
            UNAUTHORIZED,
            "The bearer token is wrong: send the token from the file named by rmd.auth.token-file.",
            headers={"WWW-Authenticate": 'Bearer realm="rmd", error="invalid_token"'},
        )


@web.middleware
async def ready_gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Until the first pod list is adopted, /v1 answers 503 with Retry-After, so no
    declaration or registration races the start-up recovery. Only then: a watch that loses
    the API server later (an outage, a restart) must not stop heartbeats — agents refused
    for a heartbeat timeout would be lost."""
    if request.path.startswith("/v1/") and not request.app[ENGINE].adopted:
        raise ProblemError(
            NOT_READY,
            "The daemon is starting: it has not finished listing its TaskManager pods yet. "
            "Retry shortly.",
            headers={"Retry-After": "1"},
        )
    return await handler(request)


@web.middleware
async def leader_gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With high availability, only the leader serves /v1 (its reads too: a follower's
    allocator holds nothing). A follower answers 503 with ``leader_url``, the leader's
    address, when it knows one."""
    leadership = request.app[LEADERSHIP]
    if leadership is not None and request.path.startswith("/v1/"):
        check_leader(leadership)
    return await handler(request)


def check_leader(leadership: Leadership) -> None:
    """Raise the 503 ``not-leader`` problem (with ``leader_url`` when one is known) unless
    this daemon leads; the heartbeat channel asks this again for every frame."""
    if leadership.is_leader:
        return
    leader_url = leadership.leader_url
    if leader_url is None:
        raise ProblemError(
            NOT_LEADER,
            "This daemon is a standby and no leader is known yet (an election is under "
            "way). Retry shortly.",
            headers={"Retry-After": "1"},
        )
    raise ProblemError(
        NOT_LEADER,
        f"This daemon is a standby; the leader answers at {leader_url}: send the request "
        "there (leader_url).",
        headers={"Retry-After": "1"},
        extensions={"leader_url": leader_url},
    )


def core_error_problem(error: CoreError) -> ProblemError:
    """The problem the allocator's refusal is answered with (404 unknown TaskManager, ...)."""
    for error_type, kind in _CORE_ERROR_KINDS:
        if isinstance(error, error_type):
            return ProblemError(kind, error.detail)
    return ProblemError(CONFLICT, error.detail)


def _http_error_response(request: web.Request, error: web.HTTPException) -> web.Response:
    headers = {name: error.headers[name] for name in _KEPT_HEADERS if name in error.headers}
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        return problem_response(
            BODY_TOO_LARGE,
            f"The request body is larger than {MAX_BODY_BYTES} bytes: send a smaller body.",
            headers=headers,
        )
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        detail = f"{request.method} is not allowed on {request.path}: use {allowed}."
    elif isinstance(error, web.HTTPNotFound):
        detail = (
            f"No route matches {request.method} {request.path}: see /openapi.json for the "
            "routes this daemon serves."
        )
    else:
        detail = f"{error.reason}: check the request against /openapi.json."
    return problem_response(http_problem_kind(error.status), detail, headers=headers)
