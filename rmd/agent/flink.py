"""When the supervised command is Flink's TaskManager: is it up?

"Up" means Flink's JobManager knows it: ``GET <rest>/taskmanagers/<resource-id>`` answers
200. The TaskManager has then registered with Flink's ResourceManager, which is what a job's
slots wait for; the agent registers with rmd only after that, so rmd never hands out slots of
a TaskManager Flink does not have (the pod spec sets ``taskmanager.resource-id`` to the pod
name, so the id is known in advance).

The JobManager's REST endpoint is read from the Flink configuration the TaskManager itself
starts with (``$FLINK_CONF_DIR/config.yaml``, the mounted ``flink-config-<cluster-id>``
ConfigMap): ``http://<jobmanager.rpc.address>:<rest.port>`` — the address the TaskManager
reaches the JobManager at, and Flink's REST port (default 8081).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import aiohttp

from rmd.agent.settings import AgentEnvironmentError
from rmd.config import agent_env
from rmd.config.flinkconf import ConfigError, FlinkConfiguration

JOBMANAGER_ADDRESS_KEY = "jobmanager.rpc.address"
REST_PORT_KEY = "rest.port"
DEFAULT_REST_PORT = 8081
UNKNOWN_TASKMANAGER = "UnknownTaskExecutorException"  # in Flink's 500 for an unknown id


class FlinkAnswer(enum.Enum):
    LISTED = "listed"
    UNKNOWN = "unknown"  # the JobManager answers and does not know the TaskManager
    NO_ANSWER = "no-answer"


def flink_rest_url(env: Mapping[str, str]) -> str:
    """The JobManager's REST URL from ``$FLINK_CONF_DIR``; AgentEnvironmentError if unusable."""
    conf_dir = env.get(agent_env.FLINK_CONF_DIR, "").strip()
    if not conf_dir:
        raise AgentEnvironmentError(
            f"{agent_env.SUPERVISE_FLINK}=true but {agent_env.FLINK_CONF_DIR} is not set: the "
            "pod must mount Flink's configuration there (rmd's pod-spec builder does)"
        )
    try:
        conf = FlinkConfiguration.load(conf_dir=Path(conf_dir), environ=env)
        address = conf.get_str(JOBMANAGER_ADDRESS_KEY)
        port = conf.get_int(REST_PORT_KEY, DEFAULT_REST_PORT, min_value=1, max_value=65535)
    except ConfigError as error:
        raise AgentEnvironmentError(f"Flink configuration in {conf_dir}: {error}") from None
    if not address:
        raise AgentEnvironmentError(
            f"{conf_dir}/config.yaml sets no {JOBMANAGER_ADDRESS_KEY}: the TaskManager cannot "
            "find the JobManager (rmd's daemon writes it into the flink-config ConfigMap)"
        )
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


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
