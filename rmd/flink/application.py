"""When has the application of an application cluster ended? (pure)

In application mode (``rmd application start``) Flink's JobManager runs one application: the
jar's ``main()``, which submits its job(s). Flink's JobManager is told to stay up after the
application ends (the entrypoint's ``application`` role), so its REST API still shows the
final state and the daemon cannot miss it; the daemon then removes the cluster (see
:mod:`rmd.kube.owner`), as Flink's native application mode does.

The answer comes from ``/applications/overview`` where Flink has it (2.3+): the application
has ended when every application it lists is in a terminal status. Older Flink (1.20) has no
such endpoint: then every job Flink lists must be globally terminal (FINISHED, FAILED,
CANCELED; SUSPENDED is not: the job may resume). An application that runs several jobs one
after another looks ended between two of them there; that is the limit of what Flink 1.x
tells over REST.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rmd.flink.answers import ApplicationSummary, JobSummary

__all__ = ["GLOBALLY_TERMINAL", "ApplicationEnd", "application_end"]

# Flink's JobStatus.isGloballyTerminalState() and ApplicationState.isTerminalState().
GLOBALLY_TERMINAL = frozenset({"FINISHED", "FAILED", "CANCELED"})
# The state an application ended in when its parts ended differently: the worst one.
_SEVERITY = ("FINISHED", "CANCELED", "FAILED")


@dataclass(frozen=True, slots=True)
class ApplicationEnd:
    """The application ended in ``state``; ``parts`` says what each part ended as."""

    state: str  # FINISHED, CANCELED or FAILED
    parts: tuple[tuple[str, str], ...]  # (application or job id, its final state)

    def describe(self) -> str:
        return ", ".join(f"{name} {state}" for name, state in self.parts)


def application_end(
    *, applications: Sequence[ApplicationSummary] | None, jobs: Sequence[JobSummary]
) -> ApplicationEnd | None:
    """The application's end, or None while it runs (or has not started a job yet).

    ``applications`` is Flink's ``/applications/overview``, None when Flink has none (1.x).
    """
    if applications is not None:
        parts = tuple((app.application_id, app.status) for app in applications)
    else:
        parts = tuple((job.job_id, job.state) for job in jobs)
    if not parts or any(state not in GLOBALLY_TERMINAL for _, state in parts):
        return None
    worst = max((state for _, state in parts), key=_SEVERITY.index)
    return ApplicationEnd(state=worst, parts=parts)
