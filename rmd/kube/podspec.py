"""The TaskManager pod manifest, as a Flink user expects it.

:class:`TaskManagerPodFactory` reads the options (``rmd.config.podoptions``) and the pod
template (``rmd.kube.podtemplate``) once, checks them, and assembles a prototype pod; each
:meth:`TaskManagerPodFactory.build` copies it and fills in the pod name and owner.

Precedence is Flink's ("Fields Overwritten by Flink" in the native Kubernetes docs):

* defined by rmd, whatever the template says: name, namespace, ownerReferences,
  ``restartPolicy: Never``, the main container's name and command;
* explicit config > template > default: image, imagePullPolicy, serviceAccountName,
  hostNetwork;
* merged, config winning on equal names: labels (the selector labels win over all),
  annotations, nodeSelector, imagePullSecrets, tolerations, env, ports, volumes and
  volumeMounts; cpu and memory requests/limits always come from config, other resources
  (ephemeral-storage, ...) of the template are kept.

Everything else in the template (sidecars, init containers, affinity, security contexts,
probes, ...) is kept as written.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from rmd.config import agent_env
from rmd.config.flinkconf import FlinkConfiguration
from rmd.config.names import is_dns1123_subdomain
from rmd.config.podoptions import TaskManagerPodOptions
from rmd.config.settings import RmdSettings
from rmd.flink.taskmanager_memory import JVM_MEM_OPTS_ENV, TaskManagerMemory
from rmd.kube.podtemplate import (
    MAIN_CONTAINER_NAME,
    PodTemplate,
    empty_pod_template,
    load_pod_template,
)

LABEL_TYPE = "type"
LABEL_TYPE_NATIVE = "flink-native-kubernetes"
LABEL_APP = "app"
LABEL_COMPONENT = "component"
LABEL_COMPONENT_TASKMANAGER = "taskmanager"
RPC_PORT_NAME = "rpc"
DNS_POLICY_HOST_NETWORK = "ClusterFirstWithHostNet"
AUTH_TOKEN_SECRET_KEY = "token"  # the key inside rmd.auth.token-secret
# Flink's own environment names, read by the Flink TaskManager itself.
FLINK_POD_NODE_ID = "_POD_NODE_ID"
FLINK_LOG_DIR = "FLINK_LOG_DIR"
# The Flink configuration ConfigMap (rmd.kube.flinkconfigmap publishes it), Flink's names.
FLINK_CONFIG_VOLUME = "flink-config-volume"


def flink_config_map_name(cluster_id: str) -> str:
    return f"flink-config-{cluster_id}"


JsonDict = dict[str, Any]


@dataclass(frozen=True)
class OwnerReference:
    """The object TaskManager pods belong to (the JobManager Deployment)."""

    api_version: str
    kind: str
    name: str
    uid: str

    def to_manifest(self) -> JsonDict:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def taskmanager_selector_labels(cluster_id: str) -> dict[str, str]:
    """Flink's TaskManager selector labels for ``cluster_id``."""
    return {
        LABEL_TYPE: LABEL_TYPE_NATIVE,
        LABEL_APP: cluster_id,
        LABEL_COMPONENT: LABEL_COMPONENT_TASKMANAGER,
    }


def selector_string(labels: Mapping[str, str]) -> str:
    """``"a=b,c=d"``: a label selector for list and watch calls."""
    return ",".join(f"{name}={value}" for name, value in labels.items())


class TaskManagerPodFactory:
    """Builds TaskManager pod manifests; all checking happens at construction."""

    def __init__(self, *, options: TaskManagerPodOptions, template: PodTemplate) -> None:
        self._options = options
        self._template_text = template.text
        self._selector_labels = taskmanager_selector_labels(options.cluster_id)
        self._prototype = _assemble(options, template, self._selector_labels)

    @classmethod
    def from_configuration(
        cls,
        conf: FlinkConfiguration,
        settings: RmdSettings,
        *,
        memory: TaskManagerMemory | None = None,
    ) -> TaskManagerPodFactory:
        """Read and check every option and the pod template; raises ConfigError.
        ``memory``: precomputed JVM memory options (see TaskManagerPodOptions)."""
        options = TaskManagerPodOptions.from_configuration(conf, settings, memory=memory)
        if options.pod_template is None:
            template = empty_pod_template()
        else:
            key, path = options.pod_template
            template = load_pod_template(path, key=key)
        return cls(options=options, template=template)

    @property
    def options(self) -> TaskManagerPodOptions:
        return self._options

    @property
    def pod_template_text(self) -> str | None:
        """The TaskManager pod template file's text, when one is configured."""
        return self._template_text

    def container_env(self) -> dict[str, str | None]:
        """The main container's variables as the pod spec sets them: the value, or None
        where the pod learns it (``valueFrom``: downward API, Secrets, ConfigMaps)."""
        container = next(
            item
            for item in self._prototype["spec"]["containers"]
            if item.get("name") == MAIN_CONTAINER_NAME
        )
        return {
            str(item["name"]): str(item["value"]) if "value" in item else None
            for item in container.get("env") or []
        }

    @property
    def selector_labels(self) -> dict[str, str]:
        return dict(self._selector_labels)

    def build(self, *, pod_name: str, owner: OwnerReference | None) -> JsonDict:
        """The complete Pod manifest for ``pod_name``, JSON-ready (a fresh copy each call)."""
        if not is_dns1123_subdomain(pod_name):
            raise ValueError(
                f"pod name {pod_name!r} is not a DNS subdomain (lower-case letters, digits, "
                f"'-' and '.', at most 253 characters)"
            )
        pod = copy.deepcopy(self._prototype)
        pod["metadata"]["name"] = pod_name  # the prototype's first metadata field
        if owner is not None:
            pod["metadata"] = _insert_after(
                pod["metadata"],
                after=("annotations", "labels"),
                name="ownerReferences",
                value=[owner.to_manifest()],
            )
        return pod


def _insert_after(mapping: JsonDict, *, after: tuple[str, ...], name: str, value: Any) -> JsonDict:
    """``mapping`` with ``name: value`` placed after the first present key of ``after``."""
    anchor = next((key for key in after if key in mapping), None)
    result: JsonDict = {}
    if anchor is None:
        result[name] = value
    for key, item in mapping.items():
        result[key] = item
        if key == anchor:
            result[name] = value
    return result


# ---------------------------------------------------------------------------- assembly


def _assemble(
    options: TaskManagerPodOptions, template: PodTemplate, selector: Mapping[str, str]
) -> JsonDict:
    source = copy.deepcopy(template.pod)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(options, source.get("metadata") or {}, selector),
        "spec": _spec(options, source.get("spec") or {}, template),
    }


def _metadata(
    options: TaskManagerPodOptions, source: JsonDict, selector: Mapping[str, str]
) -> JsonDict:
    labels = {**(source.get("labels") or {}), **dict(options.labels), **selector}
    annotations = {**(source.get("annotations") or {}), **dict(options.annotations)}
    metadata: JsonDict = {"name": "", "namespace": options.namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    defined = {"name", "namespace", "labels", "annotations", "ownerReferences"}
    for name, value in source.items():
        if name not in defined:
            metadata[name] = value
    return metadata


def _spec(options: TaskManagerPodOptions, source: JsonDict, template: PodTemplate) -> JsonDict:
    spec: JsonDict = {"restartPolicy": "Never"}

    template_account = source.get("serviceAccountName") or source.get("serviceAccount")
    if options.service_account_explicit or not template_account:
        spec["serviceAccountName"] = options.service_account
    else:
        spec["serviceAccountName"] = template_account

    host_network = (
        options.host_network
        if options.host_network_explicit
        else bool(source.get("hostNetwork", False))
    )
    if host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = DNS_POLICY_HOST_NETWORK
    elif source.get("dnsPolicy") is not None:
        spec["dnsPolicy"] = source["dnsPolicy"]

    pull_secrets = list(source.get("imagePullSecrets") or [])
    known = {entry.get("name") for entry in pull_secrets}
    pull_secrets += [{"name": name} for name in options.image_pull_secrets if name not in known]
    if pull_secrets:
        spec["imagePullSecrets"] = pull_secrets

    node_selector = {**(source.get("nodeSelector") or {}), **dict(options.node_selector)}
    if node_selector:
        spec["nodeSelector"] = node_selector

    tolerations = list(source.get("tolerations") or [])
    for toleration in options.tolerations:
        manifest = toleration.to_manifest()
        if manifest not in tolerations:
            tolerations.append(manifest)
    if tolerations:
        spec["tolerations"] = tolerations

    main = _main_container(options, template.main_container, host_network=host_network)
    containers = list(source.get("containers") or [])
    containers.insert(min(template.main_index, len(containers)), main)
    volumes = merge_named(
        source.get("volumes") or [],
        [
            {"name": mount.volume_name, "secret": {"secretName": mount.secret}}
            for mount in options.secret_mounts
        ],
        _flink_config_volumes(options),
    )

    defined = {
        "restartPolicy",
        "serviceAccountName",
        "serviceAccount",
        "hostNetwork",
        "dnsPolicy",
        "imagePullSecrets",
        "nodeSelector",
        "tolerations",
        "containers",
        "volumes",
    }
    for name, value in source.items():
        if name == "containers":
            spec["containers"] = containers
        elif name == "volumes":
            if volumes:
                spec["volumes"] = volumes
        elif name not in defined:
            spec[name] = value
    spec.setdefault("containers", containers)
    if volumes:
        spec.setdefault("volumes", volumes)
    return spec


def _main_container(
    options: TaskManagerPodOptions, source: JsonDict, *, host_network: bool
) -> JsonDict:
    source = copy.deepcopy(source)
    template_image = source.get("image")
    template_policy = source.get("imagePullPolicy")
    image = template_image if template_image and not options.image_explicit else options.image
    policy = (
        template_policy
        if template_policy and not options.image_pull_policy_explicit
        else options.image_pull_policy
    )
    container: JsonDict = {
        "name": MAIN_CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": policy,
        "command": list(options.command),
    }

    ports = list(source.get("ports") or [])
    if not host_network:
        ports = [
            port
            for port in ports
            if port.get("name") != RPC_PORT_NAME and port.get("containerPort") != options.rpc_port
        ]
        ports.append({"name": RPC_PORT_NAME, "containerPort": options.rpc_port})
    if ports:
        container["ports"] = ports

    container["env"] = merge_named(
        source.get("env") or [], _config_env(options), _internal_env(options)
    )
    container["resources"] = _resources(options, source.get("resources") or {})

    ours = {secret.mount_path for secret in options.secret_mounts}
    if options.flink_conf_dir is not None:
        ours.add(options.flink_conf_dir)
    mounts = [
        mount for mount in source.get("volumeMounts") or [] if mount.get("mountPath") not in ours
    ]
    mounts = merge_named(
        mounts,
        [
            {"name": secret.volume_name, "mountPath": secret.mount_path, "readOnly": True}
            for secret in options.secret_mounts
        ],
        _flink_config_mounts(options),
    )
    if mounts:
        container["volumeMounts"] = mounts

    defined = {"name", "image", "imagePullPolicy", "command", "args", "ports", "env"}
    defined |= {"resources", "volumeMounts"}
    for name, value in source.items():
        if name not in defined:
            container[name] = value
    return container


def _resources(options: TaskManagerPodOptions, source: JsonDict) -> JsonDict:
    requests: JsonDict = {
        "cpu": cpu_quantity(options.cpu),
        "memory": memory_quantity(options.memory_mib),
    }
    limits: JsonDict = {
        "cpu": cpu_quantity(options.cpu * options.cpu_limit_factor),
        "memory": memory_quantity(options.memory_mib, options.memory_limit_factor),
    }
    external = {
        resource.config_key: str(resource.amount) for resource in options.external_resources
    }
    for target, part in ((requests, "requests"), (limits, "limits")):
        for name, value in (source.get(part) or {}).items():
            if name not in target and name not in external:
                target[name] = value
        target.update(external)
    resources: JsonDict = {"requests": requests, "limits": limits}
    for name, value in source.items():
        if name not in resources:
            resources[name] = value
    return resources


def _field_env(name: str, field_path: str) -> JsonDict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def _internal_env(options: TaskManagerPodOptions) -> list[JsonDict]:
    env = [
        _field_env(agent_env.POD_NAME, "metadata.name"),
        _field_env(agent_env.POD_NAMESPACE, "metadata.namespace"),
        _field_env(agent_env.POD_IP, "status.podIP"),
        _field_env(agent_env.FLINK_POD_IP, "status.podIP"),
        _field_env(agent_env.NODE_NAME, "spec.nodeName"),
        _field_env(FLINK_POD_NODE_ID, "spec.nodeName"),
        {"name": agent_env.RESOURCEMANAGER_URL, "value": options.resourcemanager_url},
        {"name": agent_env.TASKMANAGER_SLOTS, "value": str(options.slots)},
        {"name": agent_env.TASKMANAGER_PORT, "value": str(options.rpc_port)},
        {"name": agent_env.HEARTBEAT_INTERVAL, "value": _seconds(options.heartbeat_interval)},
    ]
    if options.auth_token_secret:
        env.append(
            {
                "name": agent_env.AUTH_TOKEN,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": options.auth_token_secret,
                        "key": AUTH_TOKEN_SECRET_KEY,
                    }
                },
            }
        )
    if options.log_dir:
        env.append({"name": FLINK_LOG_DIR, "value": options.log_dir})
    if options.flink_conf_dir is not None:
        env.append({"name": agent_env.FLINK_CONF_DIR, "value": options.flink_conf_dir})
        env.append({"name": agent_env.SUPERVISE_FLINK, "value": "true"})
    if options.jvm_memory_options is not None:
        env.append({"name": JVM_MEM_OPTS_ENV, "value": options.jvm_memory_options})
    return env


def _flink_config_mounts(options: TaskManagerPodOptions) -> list[JsonDict]:
    if options.flink_conf_dir is None:
        return []
    return [{"name": FLINK_CONFIG_VOLUME, "mountPath": options.flink_conf_dir}]


def _flink_config_volumes(options: TaskManagerPodOptions) -> list[JsonDict]:
    """The ConfigMap volume with Flink's configuration, when rmd starts Flink's TaskManager."""
    if options.flink_conf_dir is None:
        return []
    return [
        {
            "name": FLINK_CONFIG_VOLUME,
            "configMap": {"name": flink_config_map_name(options.cluster_id)},
        }
    ]


def _config_env(options: TaskManagerPodOptions) -> list[JsonDict]:
    env: list[JsonDict] = [{"name": name, "value": value} for name, value in options.env]
    env += [
        {"name": ref.env, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}}
        for ref in options.secret_env
    ]
    return env


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def merge_named(*layers: Iterable[JsonDict]) -> list[JsonDict]:
    """Entries with a ``name``, later layers replacing earlier entries of the same name."""
    merged: dict[str, JsonDict] = {}
    for layer in layers:
        for entry in layer:
            name = str(entry.get("name"))
            merged.pop(name, None)
            merged[name] = entry
    return list(merged.values())


def cpu_quantity(cores: Decimal) -> str:
    """CPU as a Kubernetes quantity: whole cores as ``"2"``, else millicores (``"500m"``).

    Rounded up to the millicore, as the API server would.
    """
    millis = (cores * 1000).to_integral_value(rounding=ROUND_CEILING)
    if millis % 1000 == 0:
        return str(int(millis // 1000))
    return f"{int(millis)}m"


def memory_quantity(mib: int, factor: Decimal = Decimal(1)) -> str:
    """Memory in Mi, the limit truncated to whole MiB as Flink does."""
    return f"{int((mib * factor).to_integral_value(rounding=ROUND_FLOOR))}Mi"
