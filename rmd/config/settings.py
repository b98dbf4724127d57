"""The daemon's validated settings, read from Flink's configuration keys.

:meth:`RmdSettings.from_configuration` reads and checks everything before anything touches
the cluster: a bad value stops start-up with one :class:`ConfigError` line that names the
key, the value, what is expected and how to fix it. The keys, their parsers and defaults are
the option table's (:mod:`rmd.config.options`); a misspelt ``rmd.*`` key is an error that
suggests the closest known key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from rmd.config import options as opt
from rmd.config.daemon_parsers import MAX_CLUSTER_ID_LENGTH
from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.option import ConfigOption
from rmd.config.options import KNOWN_RMD_KEYS, RMD_PREFIX
from rmd.config.values import format_duration, format_memory_size

__all__ = [
    "APPLICATION_TARGET",
    "KNOWN_RMD_KEYS",
    "RmdSettings",
    "check_rmd_keys",
    "default_resourcemanager_url",
]

T = TypeVar("T")
APPLICATION_TARGET = "kubernetes-application"  # Flink's execution.target of application mode
_OPTION = "option"  # a field's metadata: the option it is read from


def _read(option: ConfigOption[T]) -> T:
    """A field read from ``option``; its default is the option's."""
    return field(default=option.default_value(), metadata={_OPTION: option})


def _read_optional(option: ConfigOption[T]) -> T | None:
    """A field read from ``option``, which has no default: None when it is not set."""
    return field(default=None, metadata={_OPTION: option})


@dataclass(frozen=True, kw_only=True)
class RmdSettings:
    """Everything the daemon needs to know, in plain units (seconds, bytes, counts)."""

    # Each field read from one option says which (its default is the option's); the other
    # three are worked out from several keys.
    cluster_id: str  # kubernetes.cluster-id (required)
    namespace: str = _read(opt.NAMESPACE)
    image: str = _read(opt.IMAGE)
    slots_per_taskmanager: int = _read(opt.SLOTS)
    taskmanager_memory_bytes: int = _read(opt.PROCESS_MEMORY)
    taskmanager_cpu: float = 0.0  # see _cpu(); 0 here: the number of slots
    idle_timeout: float = _read(opt.IDLE_TIMEOUT)
    registration_timeout: float = _read(opt.REGISTRATION_TIMEOUT)
    recovery_timeout: float = _read(opt.RECOVERY_TIMEOUT)
    max_start_failures_per_minute: float = _read(opt.MAX_FAILURE_RATE)
    start_retry_interval: float = _read(opt.START_RETRY_INTERVAL)
    max_slots: int | None = _read_optional(opt.MAX_SLOTS)
    redundant_taskmanagers: int = _read(opt.REDUNDANT_TASKMANAGERS)
    heartbeat_timeout: float = _read(opt.HEARTBEAT_TIMEOUT)
    heartbeat_interval: float = _read(opt.HEARTBEAT_INTERVAL)
    taskmanager_rpc_port: int = _read(opt.TASKMANAGER_RPC_PORT)
    rest_address: str = _read(opt.REST_ADDRESS)
    rest_port: int = _read(opt.REST_PORT)
    resourcemanager_url: str = ""  # see _resourcemanager_url(); "" here: the default
    auth_token_file: Path | None = _read_optional(opt.AUTH_TOKEN_FILE)  # noqa: RUF009 - no auth
    auth_token_secret: str | None = _read_optional(opt.AUTH_TOKEN_SECRET)
    max_parallel_creates: int = _read(opt.MAX_PARALLEL_REQUESTS)
    watch_resync_interval: float = _read(opt.RESYNC_INTERVAL)
    watch_idle_timeout: float = _read(opt.WATCH_IDLE_TIMEOUT)
    api_request_timeout: float = _read(opt.REQUEST_TIMEOUT)
    log_level: str = _read(opt.LOG_LEVEL)
    agent_command: tuple[str, ...] = _read(opt.AGENT_COMMAND)
    supervise_flink: bool = _read(opt.SUPERVISE_FLINK)
    launch_plan: bool = _read(opt.LAUNCH_PLAN)
    flink_rest_url: str | None = _read_optional(opt.FLINK_REST_URL)  # None: demand only over HTTP
    flink_poll_interval: float = _read(opt.FLINK_POLL_INTERVAL)
    flink_usage_poll_interval: float = _read(opt.FLINK_USAGE_POLL_INTERVAL)
    flink_request_timeout: float = _read(opt.FLINK_REQUEST_TIMEOUT)
    high_availability: str = _read(opt.HA_TYPE)  # NONE, KUBERNETES or ZOOKEEPER
    lease_duration: float = _read(opt.LEASE_DURATION)
    renew_deadline: float = _read(opt.RENEW_DEADLINE)
    retry_period: float = _read(opt.RETRY_PERIOD)
    execution_target: str | None = _read_optional(opt.EXECUTION_TARGET)
    shutdown_on_application_finish: bool = _read(opt.SHUTDOWN_ON_APPLICATION_FINISH)

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

    @property
    def application_mode(self) -> bool:
        """An application cluster (``rmd application start``): the JobManager runs one
        application, and the cluster ends with it."""
        return self.execution_target == APPLICATION_TARGET

    @classmethod
    def from_configuration(cls, conf: FlinkConfiguration) -> RmdSettings:
        """Read and validate every setting; raises ConfigError (one line) on the first problem."""
        check_rmd_keys(conf)
        cluster_id = _cluster_id(conf)
        # Typed by the fields: _read() ties each field's type to its option's.
        read: dict[str, Any] = {
            setting.name: conf.get_optional(option) if option.default is None else conf.get(option)
            for setting in fields(cls)
            if (option := setting.metadata.get(_OPTION)) is not None
        }
        interval, timeout = read["heartbeat_interval"], read["heartbeat_timeout"]
        if interval > timeout:
            raise conf.invalid(
                opt.HEARTBEAT_INTERVAL.key,
                f"'{format_duration(interval)}' is longer than {opt.HEARTBEAT_TIMEOUT.key} "
                f"'{format_duration(timeout)}'; expected an interval <= the timeout",
            )
        _check_high_availability(conf, read)
        return cls(
            **read,
            cluster_id=cluster_id,
            taskmanager_cpu=_cpu(conf, slots=read["slots_per_taskmanager"]),
            resourcemanager_url=_resourcemanager_url(
                conf,
                cluster_id=cluster_id,
                namespace=read["namespace"],
                rest_port=read["rest_port"],
            ),
        )

    @property
    def leader_election(self) -> bool:
        """Standby daemons: one leader, elected through a Lease (high-availability.type
        KUBERNETES). Otherwise one daemon, which never touches a Lease."""
        return self.high_availability == "KUBERNETES"

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
        "recovery_timeout",
        "start_retry_interval",
        "heartbeat_timeout",
        "heartbeat_interval",
        "watch_resync_interval",
        "watch_idle_timeout",
        "api_request_timeout",
        "flink_poll_interval",
        "flink_usage_poll_interval",
        "flink_request_timeout",
        "lease_duration",
        "renew_deadline",
        "retry_period",
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


def _check_high_availability(conf: FlinkConfiguration, read: dict[str, Any]) -> None:
    """Several JobManager replicas need the Lease election (else each would create pods);
    the timings must leave the leader time to renew before a follower takes over."""
    replicas = conf.get(opt.JOBMANAGER_REPLICAS)
    if replicas > 1 and read["high_availability"] != "KUBERNETES":
        raise conf.invalid(
            opt.JOBMANAGER_REPLICAS.key,
            f"'{replicas}' replicas need {opt.HA_TYPE.key}: KUBERNETES (rmd elects one leader "
            f"through a Lease; it is '{read['high_availability']}'); set it, or use 1 replica",
        )
    lease, deadline, period = read["lease_duration"], read["renew_deadline"], read["retry_period"]
    if deadline > lease:
        raise conf.invalid(
            opt.RENEW_DEADLINE.key,
            f"'{format_duration(deadline)}' is longer than {opt.LEASE_DURATION.key} "
            f"'{format_duration(lease)}'; expected a renew deadline <= the lease duration",
        )
    if period >= deadline:
        raise conf.invalid(
            opt.RETRY_PERIOD.key,
            f"'{format_duration(period)}' is not shorter than {opt.RENEW_DEADLINE.key} "
            f"'{format_duration(deadline)}'; expected a retry period < the renew deadline",
        )


def _cpu(conf: FlinkConfiguration, *, slots: int) -> float:
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
