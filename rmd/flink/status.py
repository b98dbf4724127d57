"""How the Flink follower is doing, for ``/readyz`` and the logs. Pure."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["FollowerState", "FollowerStatus"]


class FollowerState(enum.StrEnum):
    STARTING = "starting"  # no complete poll yet
    FOLLOWING = "following"  # the last poll read everything
    FAILING = "failing"  # the last poll could not read everything


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowerStatus:
    rest_url: str
    state: FollowerState
    jobs_followed: int
    reachable: bool | None = None  # None until the first request was answered or failed
    failing_for: float | None = None  # seconds since the first failed poll in a row
    last_poll_age: float | None = None  # seconds since the last complete poll
    last_error: str | None = None

    def detail(self) -> str:
        url = self.rest_url
        if self.state is FollowerState.STARTING:
            return (
                f"rmd follows the Flink JobManager at {url}; the first poll has not completed "
                "yet (it starts once the pod watch has synced)"
            )
        jobs = f"{self.jobs_followed} Flink job{'' if self.jobs_followed == 1 else 's'}"
        if self.state is FollowerState.FOLLOWING:
            age = (
                "" if self.last_poll_age is None else f"; last poll {self.last_poll_age:.1f} s ago"
            )
            return f"following {jobs} at {url}{age}"
        what = "unreachable" if self.reachable is False else "answering badly"
        since = "" if self.failing_for is None else f" for {self.failing_for:.0f} s"
        return (
            f"Flink's REST API at {url} is {what}{since} ({self.last_error}); rmd keeps the "
            f"last demand of {jobs} and releases no TaskManager as idle until Flink answers "
            "again: check that the JobManager runs and rmd.flink.rest-url points at it"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "rest_url": self.rest_url,
            "state": self.state.value,
            "reachable": self.reachable,
            "jobs_followed": self.jobs_followed,
            "failing_for_seconds": self.failing_for,
            "last_error": self.last_error,
            "detail": self.detail(),
        }
