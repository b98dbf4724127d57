"""When the supervised command is Flink's TaskManager: is it up?

"Up" means Flink's JobManager knows it: ``GET <rest>/taskmanagers/<resource-id>`` answers
200. The TaskManager has then registered with Flink's ResourceManager, which is what a job's
slots wait for; the agent registers with rmd only after that, so rmd never hands out slots of
a TaskManager Flink does not have (the pod spec sets ``taskmanager.resource-id`` to the pod
name, so the id is known in advance).

Where the JobManager's REST endpoint is: :mod:`rmd.agent.flink_conf`.
"""

from __future__ import annotations

import enum
from urllib.parse import quote

import aiohttp

from rmd.agent.flink_conf import flink_rest_url

__all__ = ["FlinkAnswer", "FlinkTaskManagerProbe", "flink_rest_url"]

UNKNOWN_TASKMANAGER = "UnknownTaskExecutorException"  # in Flink's 500 for an unknown id


class FlinkAnswer(enum.Enum):
    LISTED = "listed"
    UNKNOWN = "unknown"  # the JobManager answers and does not know the TaskManager
    NO_ANSWER = "no-answer"


class FlinkTaskManagerProbe:
    """Asks Flink's JobManager whether it lists one TaskManager."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        rest_url: str,
        resource_id: str,
        request_timeout: float,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self._session = session
        self._url = f"{self.rest_url}/taskmanagers/{quote(resource_id, safe='')}"
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)

    async def listed(self) -> bool:
        """True once the JobManager answers 200 for the TaskManager; False for anything else
        (not registered yet, no answer while the JobManager starts)."""
        return await self.answer() is FlinkAnswer.LISTED

    async def answer(self) -> FlinkAnswer:
        """What the JobManager says of the TaskManager: listed, unknown to it (Flink 2.x
        answers 500 with ``UnknownTaskExecutorException``, some versions 404), or nothing
        usable (no answer, another error)."""
        try:
            async with self._session.get(self._url, timeout=self._timeout) as response:
                body = await response.read()
                if response.status == 200:
                    return FlinkAnswer.LISTED
                if response.status == 404 or (
                    response.status == 500 and UNKNOWN_TASKMANAGER.encode() in body
                ):
                    return FlinkAnswer.UNKNOWN
                return FlinkAnswer.NO_ANSWER
        except (aiohttp.ClientError, TimeoutError):
            return FlinkAnswer.NO_ANSWER
