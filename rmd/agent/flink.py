"""When the supervised command is Flink's TaskManager: is it up?

"Up" means Flink's JobManager knows it: ``GET <rest>/taskmanagers/<resource-id>`` answers
200. The TaskManager has then registered with Flink's ResourceManager, which is what a job's
slots wait for; the agent registers with rmd only after that, so rmd never hands out slots of
a TaskManager Flink does not have (the pod spec sets ``taskmanager.resource-id`` to the pod
name, so the id is known in advance).

Until the TaskManager's RPC port accepts a connection the JobManager is not asked: a
TaskManager registers only after its RPC service is up, and Flink 2.x answers each question
about a TaskManager it does not know with a 500 and an ERROR with a stack trace in its log —
about ten per pod while the JVM starts, when asked every second from the pod's start. The
port is checked on the pod's own address (the pod spec binds the TaskManager there); the
cost of a connect that is refused is nothing to anybody. Between the port opening and the
registration (a second or two) the JobManager would still answer that ERROR: where the
TaskManager's log file is known (``-Dlog.file=`` on its command line, as the launch plan
starts it), it is asked once that log says the TaskManager registered
(:data:`REGISTERED_LINE`), read by :meth:`FlinkTaskManagerProbe.registration_logged`.

Where the JobManager's REST endpoint is: :mod:`rmd.agent.flink_conf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import aiohttp

from rmd.agent.flink_conf import flink_rest_url

__all__ = ["FlinkAnswer", "FlinkTaskManagerProbe", "flink_rest_url"]

UNKNOWN_TASKMANAGER = "UnknownTaskExecutorException"  # in Flink's 500 for an unknown id
# What Flink's TaskExecutor logs (INFO) once its ResourceManager accepted it.
REGISTERED_LINE = b"Successful registration at resource manager"
LOG_FILE_PROPERTY = "-Dlog.file="
_LOG_READ_LIMIT = 1 << 20  # bytes read per look


def taskmanager_log_file(command: Sequence[str]) -> Path | None:
    """The TaskManager's log file when its command line names it (``-Dlog.file=<path>``,
    as ``flink-console.sh`` passes it to the JVM); None otherwise."""
    for word in command:
        if word.startswith(LOG_FILE_PROPERTY) and len(word) > len(LOG_FILE_PROPERTY):
            return Path(word[len(LOG_FILE_PROPERTY) :])
    return None


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
        rpc_address: tuple[str, int] | None = None,
        log_file: Path | None = None,
    ) -> None:
        """``rpc_address``: the TaskManager's RPC host and port, checked by
        :meth:`rpc_port_open` (None: not checked, always "open"). ``log_file``: the
        TaskManager's log file, read by :meth:`registration_logged` (None: unknown)."""
        self.rest_url = rest_url.rstrip("/")
        self.rpc_address = rpc_address
        self.log_file = log_file
        self._log_identity: int | None = None  # the file's inode: a new one is read anew
        self._log_offset = 0
        self._log_tail = b""
        self._session = session
        self._url = f"{self.rest_url}/taskmanagers/{quote(resource_id, safe='')}"
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)

    async def rpc_port_open(self) -> bool:
        """Whether the TaskManager's RPC port accepts a TCP connection (closed at once)."""
        if self.rpc_address is None:
            return True
        host, port = self.rpc_address
        try:
            async with asyncio.timeout(self._timeout.total):
                _reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def registration_logged(self) -> bool:
        """Whether the TaskManager's log file gained :data:`REGISTERED_LINE` since the last
        look (only what was written after the previous call counts; a new file — Flink's
        log4j rolls it over when a TaskManager starts — or one that shrank is read from its
        start). False when there is no such file."""
        if self.log_file is None:
            return False
        try:
            with open(self.log_file, "rb") as file:
                identity = os.fstat(file.fileno()).st_ino
                size = file.seek(0, 2)
                if identity != self._log_identity or size < self._log_offset:  # rolled over
                    self._log_identity, self._log_offset, self._log_tail = identity, 0, b""
                file.seek(self._log_offset)
                chunk = file.read(_LOG_READ_LIMIT)
        except OSError:
            return False
        self._log_offset += len(chunk)
        text = self._log_tail + chunk
        self._log_tail = text[-len(REGISTERED_LINE) :]
        return REGISTERED_LINE in text

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
