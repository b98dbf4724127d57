"""The table of every configuration key rmd reads: each key once, with its parser, default,
older names, fallbacks and meaning.

The known ``rmd.*`` keys (a misspelt one is an error with a hint), the alias warnings and
README's key tables (``make config-docs``; a test keeps them equal) all come from here.
Keys, defaults and syntax are Flink's (``KubernetesConfigOptions``, ``TaskManagerOptions``,
``ResourceManagerOptions``, ...); rmd's own keys start with ``rmd.``.
"""

from __future__ import annotations

from rmd.config import daemon_parsers as daemon
from rmd.config import pod_environment as environment
from rmd.config import pod_placement as placement
from rmd.config import pod_resources as resources
from rmd.config.option import ConfigOption, MapOption, OptionKey
from rmd.config.parsers import (
    boolean,
    choice,
    duration,
    integer,
    non_empty_text,
    number,
    optional_path,
    optional_text,
    positive_duration,
    positive_number,
)

# ---------------------------------------------------------------------------- the daemon

CLUSTER_ID = ConfigOption(
    key="kubernetes.cluster-id",
    parse=daemon.cluster_id,
    default_note="(required)",
    meaning="DNS label ≤ 45 chars; names the JobManager Deployment and the pods",
)
NAMESPACE = ConfigOption(
    key="kubernetes.namespace",
    parse=daemon.namespace,
    default="default",
    meaning="namespace of the TaskManager pods",
)
SLOTS = ConfigOption(
    key="taskmanager.numberOfTaskSlots",
    parse=integer(min_value=1),
    default="1",
    meaning="slots per TaskManager",
)
IDLE_TIMEOUT = ConfigOption(
    key="resourcemanager.taskmanager-timeout",
    parse=positive_duration,
    default="30 s",
    meaning="idle TaskManagers are released at exactly this (Flink: between T and 2T)",
)
REGISTRATION_TIMEOUT = ConfigOption(
    key="resourcemanager.taskmanager-registration.timeout",
    parse=positive_duration,
    default="5 min",
    fallback_keys=("taskmanager.registration.timeout",),
    meaning="unregistered pods are deleted and replaced",
)
RECOVERY_TIMEOUT = ConfigOption(
    key="resourcemanager.previous-worker.recovery.timeout",
    parse=duration(),
    default="0 s",
    meaning="after a restart, adopted TaskManagers count as supply until they register again "
    "or this passes (no new pods for demand they may cover); 0: they never do. "
    "For exact restarts set it above `heartbeat.interval` plus the agents' reconnect time, "
    "e.g. `1 min` (`conf/config.yaml` and `rmd session start` set `1 min`)",
)
MAX_FAILURE_RATE = ConfigOption(
    key="resourcemanager.start-worker.max-failure-rate",
    parse=positive_number(expected="a number > 0"),
    default="10",
    meaning="start failures per minute before creates pause",
)
START_RETRY_INTERVAL = ConfigOption(
    key="resourcemanager.start-worker.retry-interval",
    parse=positive_duration,
    default="3 s",
    meaning="the pause",
)
MAX_SLOTS = ConfigOption(
    key="slotmanager.number-of-slots.max",
    parse=integer(min_value=1),
    default_note="unbounded",
    meaning="cap on slots over all TaskManagers",
)
REDUNDANT_TASKMANAGERS = ConfigOption(
    key="slotmanager.redundant-taskmanager-num",
    parse=integer(min_value=0),
    default="0",
    meaning="warm spare TaskManagers",
)
HEARTBEAT_INTERVAL = ConfigOption(
    key="heartbeat.interval",
    parse=positive_duration,
    default="10 s",
    meaning="agents heartbeat this often; at most `heartbeat.timeout`",
)
HEARTBEAT_TIMEOUT = ConfigOption(
    key="heartbeat.timeout",
    parse=positive_duration,
    default="50 s",
    meaning="a TaskManager silent this long is lost",
)
REST_ADDRESS = ConfigOption(
    key="rmd.rest.address",
    parse=non_empty_text(expected="e.g. '0.0.0.0'"),
    default="0.0.0.0",
    meaning="address of the HTTP API, `/metrics` included",
)
REST_PORT = ConfigOption(
    key="rmd.rest.port",
    parse=integer(min_value=1, max_value=65535),
    default="8090",
    meaning="port of the HTTP API",
)
AUTH_TOKEN_FILE = ConfigOption(
    key="rmd.auth.token-file",
    parse=optional_path,
    meaning="bearer token required on `/v1/*`; a rewritten file is taken within a second "
    "(the token before stays valid until the next rotation, for running TaskManagers)",
)
AUTH_TOKEN_SECRET = ConfigOption(
    key="rmd.auth.token-secret",
    parse=daemon.optional_secret_name,
    meaning="Secret (key `token`) the TaskManager pods read the token from",
)
MAX_PARALLEL_REQUESTS = ConfigOption(
    key="rmd.kubernetes.max-parallel-requests",
    parse=integer(min_value=1),
    default="32",
    meaning="pod creates/deletes in flight at once",
)
RESYNC_INTERVAL = ConfigOption(
    key="rmd.kubernetes.resync-interval",
    parse=positive_duration,
    default="5 min",
    meaning="full LIST beside the watch, as a safety net",
)
WATCH_IDLE_TIMEOUT = ConfigOption(
    key="rmd.kubernetes.watch-idle-timeout",
    parse=daemon.watch_idle_timeout,
    default="70 s",
    meaning="a pod watch that delivers nothing (no event, no bookmark) for this long is "
    "renewed from its last resourceVersion (API servers before 1.27 send no bookmarks: a "
    "quiet watch is renewed this often too)",
)
REQUEST_TIMEOUT = ConfigOption(
    key="rmd.kubernetes.request-timeout",
    parse=positive_duration,
    default="30 s",
    meaning="timeout of every Kubernetes API call",
)
LOG_LEVEL = ConfigOption(
    key="rmd.log.level",
    parse=choice(daemon.LOG_LEVELS, what="a log level", aliases=daemon.LOG_LEVEL_ALIASES),
    default="info",
    meaning="`debug`, `info`, `warning`, `error`",
)
FLINK_REST_URL = ConfigOption(
    key="rmd.flink.rest-url",
    parse=daemon.flink_rest_url,
    meaning="Flink JobManager REST endpoint to follow (in the JobManager pod "
    "`http://localhost:8081`); see below",
)
FLINK_POLL_INTERVAL = ConfigOption(
    key="rmd.flink.poll-interval",
    parse=positive_duration,
    default="500 ms",
    meaning="how often rmd reads Flink's jobs, i.e. how soon a submitted job's demand is "
    "seen (one small `/jobs/overview`; backoff with jitter after failures, up to 30 s)",
)
FLINK_USAGE_POLL_INTERVAL = ConfigOption(
    key="rmd.flink.usage-poll-interval",
    parse=positive_duration,
    default="2 s",
    meaning="how often rmd reads which TaskManagers Flink uses (`/taskmanagers`, for the idle "
    "release); never more often than `rmd.flink.poll-interval`",
)
FLINK_REQUEST_TIMEOUT = ConfigOption(
    key="rmd.flink.request-timeout",
    parse=positive_duration,
    default="5 s",
    meaning="timeout of one request to Flink's REST API",
)
EXECUTION_TARGET = ConfigOption(
    key="execution.target",
    parse=optional_text,
    default_note="unset",
    meaning="`kubernetes-application` (set by `rmd application start`): the daemon follows "
    "an application cluster",
)
SHUTDOWN_ON_APPLICATION_FINISH = ConfigOption(
    key="execution.shutdown-on-application-finish",
    parse=boolean,
    default="true",
    meaning="an application cluster removes itself (the daemon deletes its Deployment) once "
    "its application is FINISHED, FAILED or CANCELED",
)

# ---------------------------------------------------------------------------- high availability

HA_TYPE = ConfigOption(
    key="high-availability.type",
    deprecated_keys=("high-availability", "recovery.mode"),
    parse=daemon.high_availability_type,
    default="NONE",
    meaning="`KUBERNETES` (or Flink's `KubernetesHaServicesFactory` class name): standby "
    "daemons, one leader elected through the Lease `<cluster-id>-rmd-leader`; `NONE`: one daemon",
)
LEASE_DURATION = ConfigOption(
    key="high-availability.kubernetes.leader-election.lease-duration",
    parse=positive_duration,
    default="15 s",
    meaning="a follower takes over once the leader has not renewed the Lease for this long",
)
RENEW_DEADLINE = ConfigOption(
    key="high-availability.kubernetes.leader-election.renew-deadline",
    parse=positive_duration,
    default="15 s",
    meaning="a leader that cannot renew for this long stops writing and exits; "
    "at most the lease duration",
)
RETRY_PERIOD = ConfigOption(
    key="high-availability.kubernetes.leader-election.retry-period",
    parse=positive_duration,
    default="5 s",
    meaning="the leader renews and the followers try to acquire this often",
)

# ---------------------------------------------------------------------------- the TaskManager pod

IMAGE = ConfigOption(
    key="kubernetes.container.image.ref",
    deprecated_keys=("kubernetes.container.image",),
    parse=daemon.container_image,
    default=daemon.DEFAULT_IMAGE,
    meaning="TaskManager image",
)
PULL_POLICY = ConfigOption(
    key="kubernetes.container.image.pull-policy",
    parse=placement.pull_policy,
    default=placement.DEFAULT_PULL_POLICY,
    meaning="`IfNotPresent`, `Always`, `Never`",
)
PULL_SECRETS = ConfigOption(
    key="kubernetes.container.image.pull-secrets",
    parse=placement.pull_secrets,
    default_note="none",
    meaning="image pull Secrets, `a;b`",
)
PROCESS_MEMORY = ConfigOption(
    key="taskmanager.memory.process.size",
    parse=resources.process_memory,
    default="1728m",
    meaning="memory request of a TaskManager pod",
)
MEMORY_LIMIT_FACTOR = ConfigOption(
    key="kubernetes.taskmanager.memory.limit-factor",
    parse=resources.limit_factor,
    default="1.0",
    meaning="memory limit: the request times this (at least 1)",
)
CPU_CORES = ConfigOption(
    key="taskmanager.cpu.cores",
    parse=positive_number(expected="e.g. 1 or 0.5"),
    meaning="cpu request; wins over `kubernetes.taskmanager.cpu.amount`",
)
TASKMANAGER_CPU = ConfigOption(
    key="kubernetes.taskmanager.cpu.amount",
    deprecated_keys=("kubernetes.taskmanager.cpu",),
    parse=number(),
    default_note="number of slots",
    meaning="cpu request (≤ 0: the number of slots)",
)
CPU_LIMIT_FACTOR = ConfigOption(
    key="kubernetes.taskmanager.cpu.limit-factor",
    parse=resources.limit_factor,
    default="1.0",
    meaning="cpu limit: the request times this (at least 1)",
)
EXTERNAL_RESOURCES = ConfigOption(
    key="external-resources",
    parse=resources.external_resource_names,
    default_note="none",
    meaning="names of external resources, `gpu;fpga`, or `none`",
)
EXTERNAL_RESOURCE_AMOUNT = ConfigOption(
    key="external-resource.<name>.amount",
    parse=integer(min_value=1),
    meaning="how many of the resource each TaskManager asks for",
)
EXTERNAL_RESOURCE_CONFIG_KEY = ConfigOption(
    key="external-resource.<name>.kubernetes.config-key",
    parse=resources.resource_name,
    meaning="its Kubernetes resource name, e.g. `nvidia.com/gpu` (unset: not requested)",
)
TASKMANAGER_RPC_PORT = ConfigOption(
    key="taskmanager.rpc.port",
    parse=daemon.single_port,
    default="6122",
    meaning="the address a TaskManager registers with (one fixed port)",
)
SERVICE_ACCOUNT = ConfigOption(
    key="kubernetes.taskmanager.service-account",
    fallback_keys=("kubernetes.service-account",),
    parse=placement.service_account,
    default=placement.DEFAULT_SERVICE_ACCOUNT,
    meaning="service account of the pods",
)
LABELS = MapOption(
    key="kubernetes.taskmanager.labels",
    check=placement.label_map,
    meaning="labels, `k1:v1,k2:v2` or a YAML map",
)
ANNOTATIONS = MapOption(
    key="kubernetes.taskmanager.annotations",
    check=placement.annotation_map,
    meaning="annotations, `k1:v1,k2:v2` or a YAML map",
)
NODE_SELECTOR = MapOption(
    key="kubernetes.taskmanager.node-selector",
    check=placement.label_map,
    meaning="node selector, `k1:v1,k2:v2` or a YAML map",
)
TOLERATIONS = ConfigOption(
    key="kubernetes.taskmanager.tolerations",
    parse=placement.tolerations,
    default_note="none",
    meaning=f"tolerations, `{placement.TOLERATION_EXAMPLE};...`",
)
HOST_NETWORK = ConfigOption(
    key="kubernetes.hostnetwork.enabled",
    parse=boolean,
    default="false",
    meaning="the pods use the host's network",
)
ENV_VARIABLE = ConfigOption(
    key="containerized.taskmanager.env.<name>",
    parse=str,
    default_note="none",
    meaning="environment variable `<name>` of the TaskManager container",
)
SECRET_ENV = ConfigOption(
    key="kubernetes.env.secretKeyRef",
    parse=environment.secret_env,
    default_note="none",
    meaning=f"variables from Secrets, `{environment.SECRET_ENV_EXAMPLE};...`",
)
SECRETS = MapOption(
    key="kubernetes.secrets",
    check=environment.secret_mounts,
    meaning="Secrets mounted as files, `secret:/mount/path,...`",
)
AGENT_COMMAND = ConfigOption(
    key="rmd.taskmanager.agent-command",
    parse=daemon.agent_command,
    default="rmd;taskmanager",
    meaning="what the TaskManager container runs",
)
SUPERVISE_FLINK = ConfigOption(
    key="rmd.taskmanager.supervise-flink",
    parse=boolean,
    default="true",
    meaning="the agent wraps `<kubernetes.entry.path> taskmanager <args>`",
)
LAUNCH_PLAN = ConfigOption(
    key="rmd.taskmanager.launch-plan",
    parse=boolean,
    default="true",
    meaning=(
        "the daemon runs Flink's `kubernetes-taskmanager.sh` once and pods that match start "
        "the TaskManager's JVM directly, without the scripts' helper JVMs"
    ),
)
ENTRY_PATH = ConfigOption(
    key="kubernetes.entry.path",
    parse=environment.entry_path,
    default=environment.DEFAULT_ENTRY_PATH,
    meaning="the image's entrypoint script",
)
ENTRYPOINT_ARGS = ConfigOption(
    key="kubernetes.taskmanager.entrypoint.args",
    parse=environment.entrypoint_args,
    meaning="extra arguments of the TaskManager, split as a shell would",
)
CONF_DIR = ConfigOption(
    key="kubernetes.flink.conf.dir",
    parse=environment.conf_dir,
    default=environment.DEFAULT_CONF_DIR,
    meaning="where the `flink-config-<cluster-id>` ConfigMap is mounted (`FLINK_CONF_DIR`)",
)
LOG_DIR = ConfigOption(
    key="kubernetes.flink.log.dir",
    parse=optional_text,
    meaning="`FLINK_LOG_DIR` of the TaskManager container",
)
RESOURCEMANAGER_URL = ConfigOption(
    key="rmd.taskmanager.resourcemanager-url",
    parse=optional_text,
    default_note="`http://<cluster-id>.<namespace>.svc:<port>`",
    meaning="put into each TaskManager pod: where the agent finds rmd",
)
POD_TEMPLATE = ConfigOption(
    key="kubernetes.pod-template-file.taskmanager",
    fallback_keys=("kubernetes.pod-template-file.default", "kubernetes.pod-template-file"),
    parse=optional_path,
    meaning="a Pod YAML the TaskManager pods start from (see `rmd podspec`)",
)

# ---------------------------------------------------------------------------- the JobManager
# (read by `rmd session start`, which deploys the JobManager Deployment and its Services)

JOBMANAGER_REPLICAS = ConfigOption(
    key="kubernetes.jobmanager.replicas",
    parse=integer(min_value=1),
    default="1",
    meaning="JobManager pods of the Deployment (more than 1 needs high availability)",
)
JOBMANAGER_CPU = ConfigOption(
    key="kubernetes.jobmanager.cpu.amount",
    deprecated_keys=("kubernetes.jobmanager.cpu",),
    parse=positive_number(expected="e.g. 1 or 0.5"),
    default="1.0",
    meaning="cpu request of the JobManager pod",
)
JOBMANAGER_CPU_LIMIT_FACTOR = ConfigOption(
    key="kubernetes.jobmanager.cpu.limit-factor",
    parse=resources.limit_factor,
    default="1.0",
    meaning="JobManager cpu limit: the request times this (at least 1)",
)
JOBMANAGER_MEMORY = ConfigOption(
    key="jobmanager.memory.process.size",
    parse=resources.process_memory,
    default="1600m",
    meaning="memory request of the JobManager pod",
)
JOBMANAGER_MEMORY_LIMIT_FACTOR = ConfigOption(
    key="kubernetes.jobmanager.memory.limit-factor",
    parse=resources.limit_factor,
    default="1.0",
    meaning="JobManager memory limit: the request times this (at least 1)",
)
JOBMANAGER_SERVICE_ACCOUNT = ConfigOption(
    key="kubernetes.jobmanager.service-account",
    fallback_keys=("kubernetes.service-account",),
    parse=placement.service_account,
    default=placement.DEFAULT_SERVICE_ACCOUNT,
    meaning="service account of the JobManager pod (needs `conf/kubernetes/rbac.yaml`)",
)
JOBMANAGER_LABELS = MapOption(
    key="kubernetes.jobmanager.labels",
    check=placement.label_map,
    meaning="JobManager pod labels, `k1:v1,k2:v2` or a YAML map",
)
JOBMANAGER_ANNOTATIONS = MapOption(
    key="kubernetes.jobmanager.annotations",
    check=placement.annotation_map,
    meaning="JobManager pod annotations, `k1:v1,k2:v2` or a YAML map",
)
JOBMANAGER_NODE_SELECTOR = MapOption(
    key="kubernetes.jobmanager.node-selector",
    check=placement.label_map,
    meaning="JobManager node selector, `k1:v1,k2:v2` or a YAML map",
)
JOBMANAGER_TOLERATIONS = ConfigOption(
    key="kubernetes.jobmanager.tolerations",
    parse=placement.tolerations,
    default_note="none",
    meaning=f"JobManager tolerations, `{placement.TOLERATION_EXAMPLE};...`",
)
JOBMANAGER_ENV_VARIABLE = ConfigOption(
    key="containerized.master.env.<name>",
    parse=str,
    default_note="none",
    meaning="environment variable `<name>` of the JobManager container",
)
JOBMANAGER_ENTRY_PATH = ConfigOption(
    key="rmd.jobmanager.entry-path",
    parse=environment.entry_path,
    default="/rmd-entrypoint.sh",
    meaning="the rmd image's entrypoint; the JobManager pod runs `<it> jobmanager <args>`",
)
JOBMANAGER_ENTRYPOINT_ARGS = ConfigOption(
    key="kubernetes.jobmanager.entrypoint.args",
    parse=environment.entrypoint_args,
    meaning="extra arguments of the JobManager (`-D key=value` reach the daemon too)",
)
JOBMANAGER_POD_TEMPLATE = ConfigOption(
    key="kubernetes.pod-template-file.jobmanager",
    fallback_keys=("kubernetes.pod-template-file.default", "kubernetes.pod-template-file"),
    parse=optional_path,
    meaning="a Pod YAML the JobManager pod starts from",
)
JOBMANAGER_RPC_PORT = ConfigOption(
    key="jobmanager.rpc.port",
    parse=daemon.single_port,
    default="6123",
    meaning="the JobManager's RPC port (internal Service)",
)
BLOB_SERVER_PORT = ConfigOption(
    key="blob.server.port",
    parse=daemon.single_port,
    default="6124",
    meaning="the JobManager's blob server port (internal Service; one fixed port)",
)
FLINK_REST_PORT = ConfigOption(
    key="rest.port",
    parse=daemon.single_port,
    default="8081",
    meaning="Flink's REST port (the `<cluster-id>-rest` Service)",
)
REST_SERVICE_TYPE = ConfigOption(
    key="kubernetes.rest-service.exposed.type",
    parse=choice(("ClusterIP", "NodePort", "LoadBalancer"), what="a REST Service type"),
    default="ClusterIP",
    meaning="type of the `<cluster-id>-rest` Service: `ClusterIP`, `NodePort`, `LoadBalancer`",
)

# ---------------------------------------------------------------------------- the table

DAEMON_OPTIONS: tuple[OptionKey, ...] = (
    CLUSTER_ID,
    NAMESPACE,
    SLOTS,
    IDLE_TIMEOUT,
    REGISTRATION_TIMEOUT,
    RECOVERY_TIMEOUT,
    MAX_FAILURE_RATE,
    START_RETRY_INTERVAL,
    MAX_SLOTS,
    REDUNDANT_TASKMANAGERS,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TIMEOUT,
    REST_ADDRESS,
    REST_PORT,
    AUTH_TOKEN_FILE,
    AUTH_TOKEN_SECRET,
    MAX_PARALLEL_REQUESTS,
    RESYNC_INTERVAL,
    WATCH_IDLE_TIMEOUT,
    REQUEST_TIMEOUT,
    LOG_LEVEL,
    FLINK_REST_URL,
    FLINK_POLL_INTERVAL,
    FLINK_USAGE_POLL_INTERVAL,
    FLINK_REQUEST_TIMEOUT,
    HA_TYPE,
    LEASE_DURATION,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    EXECUTION_TARGET,
    SHUTDOWN_ON_APPLICATION_FINISH,
)
POD_OPTIONS: tuple[OptionKey, ...] = (
    IMAGE,
    PULL_POLICY,
    PULL_SECRETS,
    PROCESS_MEMORY,
    MEMORY_LIMIT_FACTOR,
    CPU_CORES,
    TASKMANAGER_CPU,
    CPU_LIMIT_FACTOR,
    EXTERNAL_RESOURCES,
    EXTERNAL_RESOURCE_AMOUNT,
    EXTERNAL_RESOURCE_CONFIG_KEY,
    TASKMANAGER_RPC_PORT,
    SERVICE_ACCOUNT,
    LABELS,
    ANNOTATIONS,
    NODE_SELECTOR,
    TOLERATIONS,
    HOST_NETWORK,
    ENV_VARIABLE,
    SECRET_ENV,
    SECRETS,
    AGENT_COMMAND,
    SUPERVISE_FLINK,
    LAUNCH_PLAN,
    ENTRY_PATH,
    ENTRYPOINT_ARGS,
    CONF_DIR,
    LOG_DIR,
    RESOURCEMANAGER_URL,
    POD_TEMPLATE,
)
JOBMANAGER_OPTIONS: tuple[OptionKey, ...] = (
    JOBMANAGER_REPLICAS,
    JOBMANAGER_CPU,
    JOBMANAGER_CPU_LIMIT_FACTOR,
    JOBMANAGER_MEMORY,
    JOBMANAGER_MEMORY_LIMIT_FACTOR,
    JOBMANAGER_SERVICE_ACCOUNT,
    JOBMANAGER_LABELS,
    JOBMANAGER_ANNOTATIONS,
    JOBMANAGER_NODE_SELECTOR,
    JOBMANAGER_TOLERATIONS,
    JOBMANAGER_ENV_VARIABLE,
    JOBMANAGER_ENTRY_PATH,
    JOBMANAGER_ENTRYPOINT_ARGS,
    JOBMANAGER_POD_TEMPLATE,
    JOBMANAGER_RPC_PORT,
    BLOB_SERVER_PORT,
    FLINK_REST_PORT,
    REST_SERVICE_TYPE,
)
OPTIONS: tuple[OptionKey, ...] = DAEMON_OPTIONS + POD_OPTIONS + JOBMANAGER_OPTIONS

RMD_PREFIX = "rmd."
KNOWN_RMD_KEYS: frozenset[str] = frozenset(
    key for option in OPTIONS for key in option.all_keys if key.startswith(RMD_PREFIX)
)
