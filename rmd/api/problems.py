"""Errors as RFC 9457 problem details (``application/problem+json``).

Status codes, chosen once for the whole API:

* 400 — the request cannot be parsed: malformed JSON, a body that is not a JSON object, a
  required field missing, a field of the wrong JSON type, a query value that is not a number.
* 422 — the request parses but a value is out of range or badly formed: ``slots`` beyond its
  bounds, an ``address`` that is not ``host:port``, an id with forbidden characters,
  ``wait`` beyond the maximum.
* 401 missing/wrong bearer token, 403 registration refused, 404 unknown route/job/TaskManager,
  405 method not allowed, 408 body not received in time (the connection is closed), 413 body
  over 64 KiB, 500 internal error, 503 not ready (or, with high availability, not the
  leader: the answer's ``leader_url`` says where the leader is).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web

__all__ = [
    "BODY_TOO_LARGE",
    "CONFLICT",
    "INTERNAL_ERROR",
    "INVALID_VALUE",
    "MALFORMED_REQUEST",
    "NOT_LEADER",
    "NOT_READY",
    "PROBLEM_CONTENT_TYPE",
    "REGISTRATION_REFUSED",
    "REQUEST_TIMEOUT",
    "UNAUTHORIZED",
    "UNKNOWN_JOB",
    "UNKNOWN_TASKMANAGER",
    "ProblemError",
    "ProblemKind",
    "http_problem_kind",
    "problem_document",
    "problem_response",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One kind of problem: its ``type`` URI, its ``title`` and its HTTP status."""

    type_uri: str
    title: str
    status: int


def _kind(slug: str, title: str, status: int) -> ProblemKind:
    return ProblemKind(type_uri=f"urn:rmd:problem:{slug}", title=title, status=status)


MALFORMED_REQUEST = _kind("malformed-request", "Malformed request", 400)
INVALID_VALUE = _kind("invalid-value", "Invalid value", 422)
UNAUTHORIZED = _kind("unauthorized", "Unauthorized", 401)
REGISTRATION_REFUSED = _kind("registration-refused", "Registration refused", 403)
UNKNOWN_JOB = _kind("unknown-job", "Unknown job", 404)
UNKNOWN_TASKMANAGER = _kind("unknown-taskmanager", "Unknown TaskManager", 404)
CONFLICT = _kind("conflict", "Conflict", 409)
REQUEST_TIMEOUT = _kind("request-timeout", "Request timeout", 408)
BODY_TOO_LARGE = _kind("body-too-large", "Request body too large", 413)
INTERNAL_ERROR = _kind("internal-error", "Internal error", 500)
NOT_READY = _kind("not-ready", "Not ready", 503)
NOT_STORED = _kind("not-stored", "Not stored", 503)
NOT_LEADER = _kind("not-leader", "Not the leader", 503)


def http_problem_kind(status: int) -> ProblemKind:
    """A plain HTTP error (unknown route, 405, ...): ``about:blank`` with the status phrase."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return ProblemKind(type_uri="about:blank", title=title, status=status)


class ProblemError(Exception):
    """Raised by handlers and validators; the error middleware turns it into a response."""

    def __init__(
        self,
        kind: ProblemKind,
        detail: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})


def problem_document(
    kind: ProblemKind,
    detail: str,
    *,
    field: str | None = None,
    extensions: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """The problem+json document (also what the heartbeat channel sends in a text frame)."""
    body: dict[str, object] = {
        "type": kind.type_uri,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    body.update(extensions or {})
    return body


def problem_response(
    kind: ProblemKind,
    detail: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, str] | None = None,
) -> web.Response:
    """A problem+json response; ``field`` (an extension member) names the offending input,
    ``extensions`` are further members (``leader_url``). A 408 closes the connection
    (RFC 9110: the server gives up on the request)."""
    response = web.Response(
        status=kind.status,
        text=json.dumps(problem_document(kind, detail, field=field, extensions=extensions)),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )
    if kind.status == REQUEST_TIMEOUT.status:
        response.force_close()
    return response
