"""A client library for JobMasters: declare, wait, release and list jobs (API.md v1).

:class:`RmdClient` is async (aiohttp); :class:`SyncRmdClient` wraps it for blocking code.
Error answers raise :class:`RmdProblem` subclasses carrying the problem's type, title,
status and detail.
"""

from rmd.client.aio import RmdClient
from rmd.client.errors import (
    Forbidden,
    InvalidValue,
    MalformedRequest,
    NotFound,
    NotReady,
    RmdError,
    RmdProblem,
    RmdUnreachable,
    ServerError,
    Unauthorized,
    UnexpectedAnswer,
)
from rmd.client.sync import SyncRmdClient
from rmd.client.views import JobSlot, JobView, PodProblem

__all__ = [
    "Forbidden",
    "InvalidValue",
    "JobSlot",
    "JobView",
    "MalformedRequest",
    "NotFound",
    "NotReady",
    "PodProblem",
    "RmdClient",
    "RmdError",
    "RmdProblem",
    "RmdUnreachable",
    "ServerError",
    "SyncRmdClient",
    "Unauthorized",
    "UnexpectedAnswer",
]
