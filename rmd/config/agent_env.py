"""Environment variable names shared by the pod-spec builder and the TaskManager agent.

The pod-spec builder puts these into every TaskManager container; the agent
(``rmd taskmanager``) reads them. Downward-API values are resolved by the kubelet (or, on
the dev cluster, by the node emulator).
"""

from __future__ import annotations

POD_NAME = "RMD_POD_NAME"  # fieldRef metadata.name — the TaskManager id
POD_NAMESPACE = "RMD_POD_NAMESPACE"  # fieldRef metadata.namespace
POD_IP = "RMD_POD_IP"  # fieldRef status.podIP
NODE_NAME = "RMD_NODE_NAME"  # fieldRef spec.nodeName
RESOURCEMANAGER_URL = "RMD_RESOURCEMANAGER_URL"  # rmd.taskmanager.resourcemanager-url
TASKMANAGER_SLOTS = "RMD_TASKMANAGER_SLOTS"  # taskmanager.numberOfTaskSlots
TASKMANAGER_PORT = "RMD_TASKMANAGER_PORT"  # the TaskManager's RPC port (taskmanager.rpc.port)
HEARTBEAT_INTERVAL = "RMD_HEARTBEAT_INTERVAL"  # heartbeat.interval, in seconds
AUTH_TOKEN = "RMD_AUTH_TOKEN"  # bearer token for the daemon's /v1 API, when auth is on
# "true" when the supervised command is Flink's TaskManager (rmd.taskmanager.supervise-flink):
# the agent registers only once Flink's JobManager lists it.
SUPERVISE_FLINK = "RMD_SUPERVISE_FLINK"
# Flink's own: the directory with config.yaml (the mounted flink-config-<cluster-id> ConfigMap).
FLINK_CONF_DIR = "FLINK_CONF_DIR"
# Flink's own name for the pod IP (its images read it).
FLINK_POD_IP = "_POD_IP_ADDRESS"
