"""Where the agent asks Flink's JobManager about its TaskManager (no HTTP here: the agent's
command line reads it before it starts the TaskManager, without loading the HTTP client).

The JobManager's REST endpoint is read from the Flink configuration the TaskManager itself
starts with (``$FLINK_CONF_DIR/config.yaml``, the mounted ``flink-config-<cluster-id>``
ConfigMap): ``http://<jobmanager.rpc.address>:<rest.port>`` — the address the TaskManager
reaches the JobManager at, and Flink's REST port (default 8081).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rmd.agent.settings import AgentEnvironmentError
from rmd.config import agent_env
from rmd.config.flinkconf import ConfigError, FlinkConfiguration

JOBMANAGER_ADDRESS_KEY = "jobmanager.rpc.address"
REST_PORT_KEY = "rest.port"
DEFAULT_REST_PORT = 8081


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
