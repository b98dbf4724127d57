"""The daemon's validated settings, read from Flink's configuration keys.

:meth:`RmdSettings.from_configuration` reads and checks everything before anything touches
the cluster: a bad value stops start-up with one :class:`ConfigError` line that names the
key, the value, what is expected and how to fix it. Flink's keys keep Flink's names and
defaults; rmd's own keys start with ``rmd.`` and are listed in :data:`KNOWN_RMD_KEYS` (a
misspelt one is an error that suggests the closest known key).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from rmd.core.flinkconf import ConfigError, FlinkConfiguration
from rmd.core.values import format_duration, format_memory_size, parse_memory_size

# Flink keys.
CLUSTER_ID = "kubernetes.cluster-id"
NAMESPACE = "kubernetes.namespace"
IMAGE = "kubernetes.container.image.ref"
IMAGE_LEGACY = "kubernetes.container.image"
SLOTS = "taskmanager.numberOfTaskSlots"
PROCESS_MEMORY = "taskmanager.memory.process.size"
CPU_CORES = "taskmanager.cpu.cores"
TASKMANAGER_CPU = "kubernetes.taskmanager.cpu.amount"
TASKMANAGER_CPU_LEGACY = "kubernetes.taskmanager.cpu"
IDLE_TIMEOUT = "resourcemanager.taskmanager-timeout"
REGISTRATION_TIMEOUT = "resourcemanager.taskmanager-registration.timeout"
REGISTRATION_TIMEOUT_LEGACY = "taskmanager.registration.timeout"
MAX_FAILURE_RATE = "resourcemanager.start-worker.max-failure-rate"
START_RETRY_INTERVAL = "resourcemanager.start-worker.retry-interval"
MAX_SLOTS = "slotmanager.number-of-slots.max"
REDUNDANT_TASKMANAGERS = "slotmanager.redundant-taskmanager-num"
HEARTBEAT_TIMEOUT = "heartbeat.timeout"
HEARTBEAT_INTERVAL = "heartbeat.interval"
TASKMANAGER_RPC_PORT = "taskmanager.rpc.port"

# rmd's own keys.
REST_ADDRESS = "rmd.rest.address"
REST_PORT = "rmd.rest.port"
RESOURCEMANAGER_URL = "rmd.taskmanager.resourcemanager-url"
AUTH_TOKEN_FILE = "rmd.auth.token-file"
AUTH_TOKEN_SECRET = "rmd.auth.token-secret"
MAX_PARALLEL_REQUESTS = "rmd.kubernetes.max-parallel-requests"
RESYNC_INTERVAL = "rmd.kubernetes.resync-interval"
REQUEST_TIMEOUT = "rmd.kubernetes.request-timeout"
LOG_LEVEL = "rmd.log.level"
AGENT_COMMAND = "rmd.taskmanager.agent-command"
SUPERVISE_FLINK = "rmd.taskmanager.supervise-flink"
FLINK_REST_URL = "rmd.flink.rest-url"
FLINK_POLL_INTERVAL = "rmd.flink.poll-interval"
FLINK_REQUEST_TIMEOUT = "rmd.flink.request-timeout"

KNOWN_RMD_KEYS: frozenset[str] = frozenset(
    {
        REST_ADDRESS,
        REST_PORT,
        RESOURCEMANAGER_URL,
        AUTH_TOKEN_FILE,
        AUTH_TOKEN_SECRET,
        MAX_PARALLEL_REQUESTS,
        RESYNC_INTERVAL,
        REQUEST_TIMEOUT,
        LOG_LEVEL,
        AGENT_COMMAND,
        SUPERVISE_FLINK,
        FLINK_REST_URL,
        FLINK_POLL_INTERVAL,
        FLINK_REQUEST_TIMEOUT,
    }
)

MAX_CLUSTER_ID_LENGTH = 45  # Flink's limit: pod names get "-taskmanager-<a>-<i>" appended
LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_LEVEL_ALIASES = {"warn": "warning"}
DEFAULT_IMAGE = "apache/flink:1.20"
DEFAULT_AGENT_COMMAND = ("rmd", "taskmanager")

_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True, kw_only=True)
class RmdSettings:
    """Everything the daemon needs to know, in plain units (seconds, bytes, counts)."""

    cluster_id: str  # kubernetes.cluster-id (required)
    namespace: str = "default"  # kubernetes.namespace
    image: str = DEFAULT_IMAGE  # kubernetes.container.image.ref (falls back to ...image)
    slots_per_taskmanager: int = 1  # taskmanager.numberOfTaskSlots
    taskmanager_memory_bytes: int = 1728 << 20  # taskmanager.memory.process.size
    taskmanager_cpu: float = 0.0  # kubernetes.taskmanager.cpu.amount; 0 here: = the slots
    idle_timeout: float = 30.0  # resourcemanager.taskmanager-timeout
    registration_timeout: float = 300.0  # resourcemanager.taskmanager-registration.timeout
    max_start_failures_per_minute: float = 10.0  # resourcemanager.start-worker.max-failure-rate
    start_retry_interval: float = 3.0  # resourcemanager.start-worker.retry-interval
    max_slots: int | None = None  # slotmanager.number-of-slots.max (None: unbounded)
    redundant_taskmanagers: int = 0  # slotmanager.redundant-taskmanager-num
    heartbeat_timeout: float = 50.0  # heartbeat.timeout
    heartbeat_interval: float = 10.0  # heartbeat.interval
    taskmanager_rpc_port: int = 6122  # taskmanager.rpc.port
    rest_address: str = "0.0.0.0"  # rmd.rest.address
    rest_port: int = 8090  # rmd.rest.port
    resourcemanager_url: str = ""  # rmd.taskmanager.resourcemanager-url; "" here: the default
    auth_token_file: Path | None = None  # rmd.auth.token-file (None: no auth)
    auth_token_secret: str | None = None  # rmd.auth.token-secret
    max_parallel_creates: int = 8  # rmd.kubernetes.max-parallel-requests
    watch_resync_interval: float = 300.0  # rmd.kubernetes.resync-interval
    api_request_timeout: float = 30.0  # rmd.kubernetes.request-timeout
    log_level: str = "info"  # rmd.log.level
    agent_command: tuple[str, ...] = DEFAULT_AGENT_COMMAND  # rmd.taskmanager.agent-command
    supervise_flink: bool = True  # rmd.taskmanager.supervise-flink
    flink_rest_url: str | None = None  # rmd.flink.rest-url (None: demand only over HTTP)
    flink_poll_interval: float = 2.0  # rmd.flink.poll-interval
    flink_request_timeout: float = 5.0  # rmd.flink.request-timeout

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
        namespace = _namespace(conf)
        slots = _int(conf, SLOTS, 1, min_value=1)
        rest_port = _int(conf, REST_PORT, 8090, min_value=1, max_value=65535)
        heartbeat_interval = _positive_duration(conf, HEARTBEAT_INTERVAL, 10.0)
        heartbeat_timeout = _positive_duration(conf, HEARTBEAT_TIMEOUT, 50.0)
        if heartbeat_interval > heartbeat_timeout:
            raise conf.invalid(
                HEARTBEAT_INTERVAL,
                f"'{format_duration(heartbeat_interval)}' is longer than {HEARTBEAT_TIMEOUT} "
                f"'{format_duration(heartbeat_timeout)}'; expected an interval <= the timeout",
            )
        return cls(
            cluster_id=cluster_id,
            namespace=namespace,
            image=_image(conf),
            slots_per_taskmanager=slots,
            taskmanager_memory_bytes=_memory(conf),
            taskmanager_cpu=_cpu(conf, slots),
            idle_timeout=_positive_duration(conf, IDLE_TIMEOUT, 30.0),
            registration_timeout=_positive_duration(
                conf, REGISTRATION_TIMEOUT, 300.0, fallback_keys=(REGISTRATION_TIMEOUT_LEGACY,)
            ),
            max_start_failures_per_minute=_positive_float(conf, MAX_FAILURE_RATE, 10.0),
            start_retry_interval=_positive_duration(conf, START_RETRY_INTERVAL, 3.0),
            max_slots=conf.get_int(MAX_SLOTS, None, min_value=1),
            redundant_taskmanagers=_int(conf, REDUNDANT_TASKMANAGERS, 0, min_value=0),
            heartbeat_timeout=heartbeat_timeout,
            heartbeat_interval=heartbeat_interval,
            taskmanager_rpc_port=_rpc_port(conf),
            rest_address=_non_empty(conf, REST_ADDRESS, "0.0.0.0", example="0.0.0.0"),
            rest_port=rest_port,
            resourcemanager_url=_resourcemanager_url(
                conf, cluster_id=cluster_id, namespace=namespace, rest_port=rest_port
            ),
            auth_token_file=_optional_path(conf, AUTH_TOKEN_FILE),
            auth_token_secret=_token_secret(conf),
            max_parallel_creates=_int(conf, MAX_PARALLEL_REQUESTS, 8, min_value=1),
            watch_resync_interval=_positive_duration(conf, RESYNC_INTERVAL, 300.0),
            api_request_timeout=_positive_duration(conf, REQUEST_TIMEOUT, 30.0),
            log_level=_log_level(conf),
            agent_command=_agent_command(conf),
            supervise_flink=conf.get_bool(SUPERVISE_FLINK, True),
            flink_rest_url=_flink_rest_url(conf),
            flink_poll_interval=_positive_duration(conf, FLINK_POLL_INTERVAL, 2.0),
            flink_request_timeout=_positive_duration(conf, FLINK_REQUEST_TIMEOUT, 5.0),
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
        "flink_poll_interval",
        "flink_request_timeout",
    }
)


def default_resourcemanager_url(*, cluster_id: str, namespace: str, rest_port: int) -> str:
    """``http://<cluster-id>.<namespace>.svc:<rest-port>``: the daemon's Service, in-cluster."""
    return f"http://{cluster_id}.{namespace}.svc:{rest_port}"


def check_rmd_keys(conf: FlinkConfiguration) -> None:
    """An unknown ``rmd.*`` key is a ConfigError that suggests the closest known key."""
    for key in conf:
        if not key.startswith("rmd.") or key in KNOWN_RMD_KEYS:
            continue
        close = difflib.get_close_matches(key, sorted(KNOWN_RMD_KEYS), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "remove it"
        raise conf.invalid(
            key,
            f"unknown rmd option; {hint} (known: {', '.join(sorted(KNOWN_RMD_KEYS))})",
        )


# ---------------------------------------------------------------------- one reader per key


def _int(
    conf: FlinkConfiguration,
    key: str,
    default: int,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
) -> int:
    value = conf.get_int(key, default, min_value=min_value, max_value=max_value)
    assert value is not None
    return value


def _positive_duration(
    conf: FlinkConfiguration, key: str, default: float, *, fallback_keys: tuple[str, ...] = ()
) -> float:
    value = conf.get_duration(key, default, fallback_keys=fallback_keys)
    assert value is not None
    if value <= 0:
        used = next((k for k in (key, *fallback_keys) if k in conf), key)
        raise conf.invalid(
            used, f"'{conf.raw(used)}' is zero; expected a positive duration, e.g. '30 s'"
        )
    return value


def _positive_float(conf: FlinkConfiguration, key: str, default: float) -> float:
    value = conf.get_float(key, default)
    assert value is not None
    if value <= 0:
        raise conf.invalid(key, f"'{conf.raw(key)}' is not positive; expected a number > 0")
    return value


def _non_empty(conf: FlinkConfiguration, key: str, default: str, *, example: str) -> str:
    value = conf.get_str(key, default)
    if not value:
        raise conf.invalid(key, f"is empty; expected e.g. '{example}'")
    return value


def _cluster_id(conf: FlinkConfiguration) -> str:
    value = conf.get_str(CLUSTER_ID)
    if not value:
        raise ConfigError(
            f"{CLUSTER_ID} is not set; set it in config.yaml or with "
            f"-D {CLUSTER_ID}=my-flink (a lowercase name, at most {MAX_CLUSTER_ID_LENGTH} chars)",
            key=CLUSTER_ID,
        )
    if len(value) > MAX_CLUSTER_ID_LENGTH:
        raise conf.invalid(
            CLUSTER_ID,
            f"'{value}' is {len(value)} characters long; expected at most "
            f"{MAX_CLUSTER_ID_LENGTH} (pod names append '-taskmanager-<attempt>-<index>')",
        )
    if not _DNS_1035_LABEL.fullmatch(value):
        raise conf.invalid(
            CLUSTER_ID,
            f"'{value}' is not a valid Kubernetes name; expected lowercase letters, digits "
            "and '-', starting with a letter and ending with a letter or digit, e.g. 'my-flink'",
        )
    return value


def _namespace(conf: FlinkConfiguration) -> str:
    value = conf.get_str(NAMESPACE, "default") or ""
    if len(value) > 63 or not _DNS_1123_LABEL.fullmatch(value):
        raise conf.invalid(
            NAMESPACE,
            f"'{value}' is not a valid namespace name; expected at most 63 lowercase letters, "
            "digits and '-', e.g. 'default' or 'flink'",
        )
    return value


def _image(conf: FlinkConfiguration) -> str:
    value = conf.get_str(IMAGE, DEFAULT_IMAGE, fallback_keys=(IMAGE_LEGACY,))
    if not value or any(char.isspace() for char in value):
        used = IMAGE if IMAGE in conf else IMAGE_LEGACY
        raise conf.invalid(
            used, f"'{value}' is not a container image; expected e.g. '{DEFAULT_IMAGE}'"
        )
    return value


def _memory(conf: FlinkConfiguration) -> int:
    value = conf.get_memory(PROCESS_MEMORY, parse_memory_size("1728m"))
    assert value is not None
    if value < 1 << 20:
        raise conf.invalid(
            PROCESS_MEMORY,
            f"'{conf.raw(PROCESS_MEMORY)}' is less than 1 MiB; expected e.g. '1728m' or '4g'",
        )
    return value


def _cpu(conf: FlinkConfiguration, slots: int) -> float:
    """Flink's order: taskmanager.cpu.cores; else kubernetes.taskmanager.cpu.amount when > 0
    (Flink's own default there is -1.0, "unset"); else the number of slots."""
    cores = conf.get_float(CPU_CORES, None)
    if cores is not None:
        if cores <= 0:
            raise conf.invalid(
                CPU_CORES, f"'{conf.raw(CPU_CORES)}' is not positive; expected e.g. 1 or 0.5"
            )
        return cores
    amount = conf.get_float(TASKMANAGER_CPU, None, fallback_keys=(TASKMANAGER_CPU_LEGACY,))
    if amount is not None and amount > 0:
        return amount
    return float(slots)


def _rpc_port(conf: FlinkConfiguration) -> int:
    text = conf.raw(TASKMANAGER_RPC_PORT)
    if text is not None and not text.strip().isdigit():
        raise conf.invalid(
            TASKMANAGER_RPC_PORT,
            f"'{text}' is not a single port; on Kubernetes the TaskManager needs a fixed "
            "port, e.g. 6122",
        )
    return _int(conf, TASKMANAGER_RPC_PORT, 6122, min_value=1, max_value=65535)


def _resourcemanager_url(
    conf: FlinkConfiguration, *, cluster_id: str, namespace: str, rest_port: int
) -> str:
    default = default_resourcemanager_url(
        cluster_id=cluster_id, namespace=namespace, rest_port=rest_port
    )
    value = conf.get_str(RESOURCEMANAGER_URL) or default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise conf.invalid(
            RESOURCEMANAGER_URL,
            f"'{value}' is not an http(s) URL; expected e.g. '{default}'",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise conf.invalid(
            RESOURCEMANAGER_URL, f"'{value}' has an invalid port; expected e.g. '{default}'"
        ) from None
    return value.rstrip("/")


def _flink_rest_url(conf: FlinkConfiguration) -> str | None:
    value = conf.get_str(FLINK_REST_URL)
    if not value:
        return None
    example = "http://localhost:8081"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise conf.invalid(
            FLINK_REST_URL,
            f"'{value}' is not an http(s) URL; expected the JobManager's REST endpoint, "
            f"e.g. '{example}'",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise conf.invalid(
            FLINK_REST_URL, f"'{value}' has an invalid port; expected e.g. '{example}'"
        ) from None
    return value.rstrip("/")


def _optional_path(conf: FlinkConfiguration, key: str) -> Path | None:
    value = conf.get_str(key)
    return Path(value) if value else None


def _token_secret(conf: FlinkConfiguration) -> str | None:
    value = conf.get_str(AUTH_TOKEN_SECRET)
    if not value:
        return None
    if len(value) > 253 or not _DNS_1123_SUBDOMAIN.fullmatch(value):
        raise conf.invalid(
            AUTH_TOKEN_SECRET,
            f"'{value}' is not a valid Secret name; expected lowercase letters, digits, '-' "
            "and '.', e.g. 'rmd-token'",
        )
    return value


def _log_level(conf: FlinkConfiguration) -> str:
    value = (conf.get_str(LOG_LEVEL, "info") or "").lower()
    value = _LOG_LEVEL_ALIASES.get(value, value)
    if value not in LOG_LEVELS:
        raise conf.invalid(
            LOG_LEVEL,
            f"'{conf.raw(LOG_LEVEL)}' is not a log level; expected one of {', '.join(LOG_LEVELS)}",
        )
    return value


def _agent_command(conf: FlinkConfiguration) -> tuple[str, ...]:
    command = tuple(conf.get_list(AGENT_COMMAND, DEFAULT_AGENT_COMMAND))
    if not command:
        raise conf.invalid(
            AGENT_COMMAND, "is empty; expected the agent's command, e.g. 'rmd;taskmanager'"
        )
    return command
