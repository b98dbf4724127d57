"""What the TaskManager agent reads from its environment, checked once at start-up.

The pod-spec builder puts these variables into every TaskManager container (names in
:mod:`rmd.config.agent_env`). A missing or malformed variable is a deployment mistake: the agent
says which one in a single line and exits with :data:`rmd.agent.exit_codes.EXIT_USAGE`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from rmd.config import agent_env

DEFAULT_HEARTBEAT_INTERVAL = 10.0  # seconds; Flink's heartbeat.interval
MAX_SLOTS = 10_000  # the daemon refuses registrations with more slots than this

REQUIRED_VARIABLES = (
    agent_env.POD_NAME,
    agent_env.POD_IP,
    agent_env.RESOURCEMANAGER_URL,
    agent_env.TASKMANAGER_SLOTS,
    agent_env.TASKMANAGER_PORT,
)


class AgentEnvironmentError(ValueError):
    """The environment lacks a variable or holds a value the agent cannot use."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    taskmanager_id: str  # the pod name
    pod_ip: str
    resourcemanager_url: str  # base URL of the daemon's HTTP API, no trailing slash
    slots: int
    port: int  # the TaskManager's RPC port
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    auth_token: str | None = None
    # The command is Flink's TaskManager: register only once Flink's JobManager lists it.
    supervise_flink: bool = False

    @property
    def address(self) -> str:
        """``host:port`` as the daemon hands it to jobs (IPv6 hosts in brackets)."""
        host = f"[{self.pod_ip}]" if ":" in self.pod_ip else self.pod_ip
        return f"{host}:{self.port}"


def settings_from_env(env: Mapping[str, str]) -> AgentSettings:
    """Read and check the agent's variables; raise :class:`AgentEnvironmentError` naming them."""
    missing = [name for name in REQUIRED_VARIABLES if not env.get(name, "").strip()]
    if missing:
        names = ", ".join(missing)
        plural = "s" if len(missing) > 1 else ""
        raise AgentEnvironmentError(
            f"environment variable{plural} {names} not set: the TaskManager pod spec must "
            "define them (rmd's pod-spec builder does)"
        )
    token = env.get(agent_env.AUTH_TOKEN, "").strip()
    interval_text = env.get(agent_env.HEARTBEAT_INTERVAL, "").strip()
    return AgentSettings(
        taskmanager_id=env[agent_env.POD_NAME].strip(),
        pod_ip=env[agent_env.POD_IP].strip(),
        resourcemanager_url=_base_url(env[agent_env.RESOURCEMANAGER_URL].strip()),
        slots=_int_in_range(
            agent_env.TASKMANAGER_SLOTS, env[agent_env.TASKMANAGER_SLOTS], low=1, high=MAX_SLOTS
        ),
        port=_int_in_range(
            agent_env.TASKMANAGER_PORT, env[agent_env.TASKMANAGER_PORT], low=1, high=65535
        ),
        heartbeat_interval=(
            _positive_seconds(agent_env.HEARTBEAT_INTERVAL, interval_text)
            if interval_text
            else DEFAULT_HEARTBEAT_INTERVAL
        ),
        auth_token=token or None,
        supervise_flink=_flag(agent_env.SUPERVISE_FLINK, env.get(agent_env.SUPERVISE_FLINK, "")),
    )


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("", "false"):
        return False
    if value == "true":
        return True
    raise AgentEnvironmentError(f"{name}={text!r} is not a boolean; use true or false")


def _base_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a malformed port or IPv6 literal
        usable = False
    if not usable:
        raise AgentEnvironmentError(
            f"{agent_env.RESOURCEMANAGER_URL}={text!r} is not an http(s) URL with a host, "
            "e.g. http://my-cluster.default.svc:8090"
        )
    return text.rstrip("/")


def _int_in_range(name: str, text: str, *, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise AgentEnvironmentError(
            f"{name}={text!r} is not a whole number; give one between {low} and {high}"
        ) from None
    if not low <= value <= high:
        raise AgentEnvironmentError(f"{name}={value} is out of range; give one in {low}..{high}")
    return value


def _positive_seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise AgentEnvironmentError(
            f"{name}={text!r} is not a positive number of seconds, e.g. 10 or 0.5"
        )
    return value
