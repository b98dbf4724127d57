"""The daemon's validated settings, read from Flink's configuration keys.

:meth:`RmdSettings.from_configuration` reads and checks everything before anything touches
the cluster: a bad value stops start-up with one :class:`ConfigError` line that names the
key, the value, what is expected and how to fix it. The keys, their parsers and defaults are
the option table's (:mod:`rmd.config.options`); a misspelt ``rmd.*`` key is an error that
suggests the closest known key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from rmd.config import options as opt
from rmd.config.daemon_parsers import MAX_CLUSTER_ID_LENGTH
from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.options import KNOWN_RMD_KEYS, RMD_PREFIX
from rmd.config.values import format_duration, format_memory_size

__all__ = ["KNOWN_RMD_KEYS", "RmdSettings", "check_rmd_keys", "default_resourcemanager_url"]


@dataclass(frozen=True, kw_only=True)
class RmdSettings:
    """Everything the daemon needs to know, in plain units (seconds, bytes, counts)."""

    # Defaults are the option table's; the option named says which key sets the field.
    cluster_id: str  # opt.CLUSTER_ID (required)
    namespace: str = opt.NAMESPACE.default_value()
    image: str = opt.IMAGE.default_value()
    slots_per_taskmanager: int = opt.SLOTS.default_value()
    taskmanager_memory_bytes: int = opt.PROCESS_MEMORY.default_value()
    taskmanager_cpu: float = 0.0  # opt.CPU_CORES, opt.TASKMANAGER_CPU; 0 here: = the slots
    idle_timeout: float = opt.IDLE_TIMEOUT.default_value()
    registration_timeout: float = opt.REGISTRATION_TIMEOUT.default_value()
    max_start_failures_per_minute: float = opt.MAX_FAILURE_RATE.default_value()
    start_retry_interval: float = opt.START_RETRY_INTERVAL.default_value()
    max_slots: int | None = None  # opt.MAX_SLOTS; None: unbounded
    redundant_taskmanagers: int = opt.REDUNDANT_TASKMANAGERS.default_value()
    heartbeat_timeout: float = opt.HEARTBEAT_TIMEOUT.default_value()
    heartbeat_interval: float = opt.HEARTBEAT_INTERVAL.default_value()
    taskmanager_rpc_port: int = opt.TASKMANAGER_RPC_PORT.default_value()
    rest_address: str = opt.REST_ADDRESS.default_value()
    rest_port: int = opt.REST_PORT.default_value()
    resourcemanager_url: str = ""  # opt.RESOURCEMANAGER_URL; "" here: the default
    auth_token_file: Path | None = None  # opt.AUTH_TOKEN_FILE; None: no auth
    auth_token_secret: str | None = None  # opt.AUTH_TOKEN_SECRET
    max_parallel_creates: int = opt.MAX_PARALLEL_REQUESTS.default_value()
    watch_resync_interval: float = opt.RESYNC_INTERVAL.default_value()
    api_request_timeout: float = opt.REQUEST_TIMEOUT.default_value()
    log_level: str = opt.LOG_LEVEL.default_value()
    agent_command: tuple[str, ...] = opt.AGENT_COMMAND.default_value()
    supervise_flink: bool = opt.SUPERVISE_FLINK.default_value()

    def __post_init__(self) -> None:
        # Derived defaults, so that RmdSettings(cluster_id="x") in code means what the same
        # configuration would mean.
        if self.taskmanager_cpu <= 0:
            object.__setattr__(self, "taskmanager_cpu", float(self.slots_per_taskmanager))
        if not self.resourcemanager_url:
            object.__setattr__(
                self,
                "resourcemanager_url",
                default_resourcemanager_url(
                    cluster_id=self.cluster_id, namespace=self.namespace, rest_port=self.rest_port
                ),
            )

    @classmethod
    def from_configuration(cls, conf: FlinkConfiguration) -> RmdSettings:
        """Read and validate every setting; raises ConfigError (one line) on the first problem."""
        check_rmd_keys(conf)
        cluster_id = _cluster_id(conf)
        namespace = conf.get(opt.NAMESPACE)
        slots = conf.get(opt.SLOTS)
        rest_port = conf.get(opt.REST_PORT)
        heartbeat_interval = conf.get(opt.HEARTBEAT_INTERVAL)
        heartbeat_timeout = conf.get(opt.HEARTBEAT_TIMEOUT)
        if heartbeat_interval > heartbeat_timeout:
            raise conf.invalid(
                opt.HEARTBEAT_INTERVAL.key,
                f"'{format_duration(heartbeat_interval)}' is longer than "
                f"{opt.HEARTBEAT_TIMEOUT.key} '{format_duration(heartbeat_timeout)}'; "
                "expected an interval <= the timeout",
            )
        return cls(
            cluster_id=cluster_id,
            namespace=namespace,
            image=conf.get(opt.IMAGE),
            slots_per_taskmanager=slots,
            taskmanager_memory_bytes=conf.get(opt.PROCESS_MEMORY),
            taskmanager_cpu=_cpu(conf, slots),
            idle_timeout=conf.get(opt.IDLE_TIMEOUT),
            registration_timeout=conf.get(opt.REGISTRATION_TIMEOUT),
            max_start_failures_per_minute=conf.get(opt.MAX_FAILURE_RATE),
            start_retry_interval=conf.get(opt.START_RETRY_INTERVAL),
            max_slots=conf.get_optional(opt.MAX_SLOTS),
            redundant_taskmanagers=conf.get(opt.REDUNDANT_TASKMANAGERS),
            heartbeat_timeout=heartbeat_timeout,
            heartbeat_interval=heartbeat_interval,
            taskmanager_rpc_port=conf.get(opt.TASKMANAGER_RPC_PORT),
            rest_address=conf.get(opt.REST_ADDRESS),
            rest_port=rest_port,
            resourcemanager_url=_resourcemanager_url(
                conf, cluster_id=cluster_id, namespace=namespace, rest_port=rest_port
            ),
            auth_token_file=conf.get_optional(opt.AUTH_TOKEN_FILE),
            auth_token_secret=conf.get_optional(opt.AUTH_TOKEN_SECRET),
            max_parallel_creates=conf.get(opt.MAX_PARALLEL_REQUESTS),
            watch_resync_interval=conf.get(opt.RESYNC_INTERVAL),
            api_request_timeout=conf.get(opt.REQUEST_TIMEOUT),
            log_level=conf.get(opt.LOG_LEVEL),
            agent_command=conf.get(opt.AGENT_COMMAND),
            supervise_flink=conf.get(opt.SUPERVISE_FLINK),
        )

    def describe(self) -> dict[str, str]:
        """Every setting as text in Flink's units (``'30 s'``, ``'1728m'``), for a start-up log."""
        described: dict[str, str] = {}
        for name, value in vars(self).items():
            if name in _DURATION_FIELDS:
                described[name] = format_duration(value)
            elif name == "taskmanager_memory_bytes":
                described[name] = format_memory_size(value)
            elif isinstance(value, tuple):
                described[name] = " ".join(value)
            else:
                described[name] = "unset" if value is None else str(value)
        return described


_DURATION_FIELDS = frozenset(
    {
        "idle_timeout",
        "registration_timeout",
        "start_retry_interval",
        "heartbeat_timeout",
        "heartbeat_interval",
        "watch_resync_interval",
        "api_request_timeout",
    }
)


def default_resourcemanager_url(*, cluster_id: str, namespace: str, rest_port: int) -> str:
    """``http://<cluster-id>.<namespace>.svc:<rest-port>``: the daemon's Service, in-cluster."""
    return f"http://{cluster_id}.{namespace}.svc:{rest_port}"


def check_rmd_keys(conf: FlinkConfiguration) -> None:
    """An unknown ``rmd.*`` key is a ConfigError that suggests the closest known key."""
    known = sorted(KNOWN_RMD_KEYS)
    for key in conf:
        if not key.startswith(RMD_PREFIX) or key in KNOWN_RMD_KEYS:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "remove it"
        raise conf.invalid(key, f"unknown rmd option; {hint} (known: {', '.join(known)})")


# ---------------------------------------------------------------------- values from several keys


def _cluster_id(conf: FlinkConfiguration) -> str:
    if not conf.get_str(opt.CLUSTER_ID.key):
        key = opt.CLUSTER_ID.key
        raise ConfigError(
            f"{key} is not set; set it in config.yaml or with -D {key}=my-flink "
            f"(a lowercase name, at most {MAX_CLUSTER_ID_LENGTH} chars)",
            key=key,
        )
    return conf.get(opt.CLUSTER_ID)


def _cpu(conf: FlinkConfiguration, slots: int) -> float:
    """Flink's order: taskmanager.cpu.cores; else kubernetes.taskmanager.cpu.amount when > 0
    (Flink's own default there is -1.0, "unset"); else the number of slots."""
    cores = conf.get_optional(opt.CPU_CORES)
    if cores is not None:
        return cores
    amount = conf.get_optional(opt.TASKMANAGER_CPU)
    if amount is not None and amount > 0:
        return amount
    return float(slots)


def _resourcemanager_url(
    conf: FlinkConfiguration, *, cluster_id: str, namespace: str, rest_port: int
) -> str:
    default = default_resourcemanager_url(
        cluster_id=cluster_id, namespace=namespace, rest_port=rest_port
    )
    value = conf.get_optional(opt.RESOURCEMANAGER_URL) or default
    key = opt.RESOURCEMANAGER_URL.key
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise conf.invalid(key, f"'{value}' is not an http(s) URL; expected e.g. '{default}'")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise conf.invalid(
            key, f"'{value}' has an invalid port; expected e.g. '{default}'"
        ) from None
    return value.rstrip("/")
