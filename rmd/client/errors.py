"""What the client raises: the daemon's problem+json answers as typed exceptions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "Forbidden",
    "InvalidValue",
    "MalformedRequest",
    "NotFound",
    "NotReady",
    "RmdError",
    "RmdProblem",
    "RmdUnreachable",
    "ServerError",
    "Unauthorized",
    "UnexpectedAnswer",
]


class RmdError(Exception):
    """Anything the client raises."""


class RmdUnreachable(RmdError):
    """No answer from the daemon (connection refused or dropped, timeout), after retries."""


class UnexpectedAnswer(RmdError):
    """A success answer that is not what API.md promises (e.g. not a JobView)."""


class RmdProblem(RmdError):
    """An error answer (``application/problem+json``): its ``type``, ``title``, ``status``,
    ``detail`` (what to fix) and, when the daemon names it, the offending ``field``;
    ``leader_url``: a standby daemon's pointer to the leader (high availability)."""

    def __init__(
        self,
        *,
        type: str,  # the member's name in RFC 9457
        title: str,
        status: int,
        detail: str,
        field: str | None = None,
        retry_after: float | None = None,
        leader_url: str | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.type = type
        self.title = title
        self.status = status
        self.detail = detail
        self.field = field
        self.retry_after = retry_after
        self.leader_url = leader_url

    @classmethod
    def from_answer(
        cls, status: int, document: Mapping[str, Any], *, text: str, retry_after: float | None
    ) -> RmdProblem:
        """The exception for an error answer; a body that is no problem document still gives
        one (type ``about:blank``, the body's start as the detail)."""
        kind = _BY_STATUS.get(status, ServerError if status >= 500 else RmdProblem)
        title = document.get("title")
        detail = document.get("detail")
        problem_type = document.get("type")
        field = document.get("field")
        leader_url = document.get("leader_url")
        return kind(
            type=problem_type if isinstance(problem_type, str) else "about:blank",
            title=title if isinstance(title, str) else f"HTTP {status}",
            status=status,
            detail=detail if isinstance(detail, str) else (" ".join(text.split())[:300] or "-"),
            field=field if isinstance(field, str) else None,
            retry_after=retry_after,
            leader_url=leader_url.rstrip("/")
            if isinstance(leader_url, str) and leader_url
            else None,
        )


class MalformedRequest(RmdProblem):
    """400: the request could not be parsed."""


class Unauthorized(RmdProblem):
    """401: missing or wrong bearer token."""


class Forbidden(RmdProblem):
    """403."""


class NotFound(RmdProblem):
    """404: an unknown job (or route)."""


class InvalidValue(RmdProblem):
    """422: a value out of range or badly formed (``field`` names it)."""


class NotReady(RmdProblem):
    """503 after the retries: the daemon is still recovering its TaskManagers, or (with
    ``leader_url``) it is a standby and no leader could be reached."""


class ServerError(RmdProblem):
    """Another 5xx."""


_BY_STATUS: dict[int, type[RmdProblem]] = {
    400: MalformedRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    422: InvalidValue,
    503: NotReady,
}
