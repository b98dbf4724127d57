"""Flink's TaskManager pod options, read and checked once: everything the pod spec needs.

:func:`TaskManagerPodOptions.from_configuration` turns the flat Flink configuration into
typed values and refuses bad input with a :class:`~rmd.core.flinkconf.ConfigError` that
names the key, the value, what was expected and how to fix it. Nothing here builds the pod
(``rmd.kube.podspec`` does) or reads the pod template (``rmd.kube.podtemplate`` does).

Option names, defaults and syntax are Flink's (``KubernetesConfigOptions``,
``ExternalResourceOptions``): maps ``k1:v1,k2:v2``, lists of maps ``k:v,k:v;k:v``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from rmd.core import agent_env
from rmd.core.flinkconf import ConfigError, FlinkConfiguration
from rmd.core.settings import RmdSettings
from rmd.core.values import parse_map

# ---------------------------------------------------------------------------- keys

CPU_KEY = "kubernetes.taskmanager.cpu.amount"
CPU_DEPRECATED_KEY = "kubernetes.taskmanager.cpu"
CPU_LIMIT_FACTOR_KEY = "kubernetes.taskmanager.cpu.limit-factor"
MEMORY_KEY = "taskmanager.memory.process.size"
MEMORY_LIMIT_FACTOR_KEY = "kubernetes.taskmanager.memory.limit-factor"
EXTERNAL_RESOURCES_KEY = "external-resources"
IMAGE_KEY = "kubernetes.container.image.ref"
IMAGE_DEPRECATED_KEY = "kubernetes.container.image"
PULL_POLICY_KEY = "kubernetes.container.image.pull-policy"
PULL_SECRETS_KEY = "kubernetes.container.image.pull-secrets"
SERVICE_ACCOUNT_KEY = "kubernetes.taskmanager.service-account"
SERVICE_ACCOUNT_FALLBACK_KEY = "kubernetes.service-account"
NODE_SELECTOR_KEY = "kubernetes.taskmanager.node-selector"
TOLERATIONS_KEY = "kubernetes.taskmanager.tolerations"
LABELS_KEY = "kubernetes.taskmanager.labels"
ANNOTATIONS_KEY = "kubernetes.taskmanager.annotations"
HOST_NETWORK_KEY = "kubernetes.hostnetwork.enabled"
ENV_PREFIX = "containerized.taskmanager.env."
SECRET_ENV_KEY = "kubernetes.env.secretKeyRef"
SECRETS_KEY = "kubernetes.secrets"
ENTRY_PATH_KEY = "kubernetes.entry.path"
ENTRYPOINT_ARGS_KEY = "kubernetes.taskmanager.entrypoint.args"
LOG_DIR_KEY = "kubernetes.flink.log.dir"
CONF_DIR_KEY = "kubernetes.flink.conf.dir"
POD_TEMPLATE_KEY = "kubernetes.pod-template-file.taskmanager"
POD_TEMPLATE_FALLBACK_KEYS = (
    "kubernetes.pod-template-file.default",
    "kubernetes.pod-template-file",
)

DEFAULT_ENTRY_PATH = "/docker-entrypoint.sh"
DEFAULT_CONF_DIR = "/opt/flink/conf"  # where the flink-config-<cluster-id> ConfigMap is mounted
DEFAULT_PULL_POLICY = "IfNotPresent"
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
DEFAULT_SERVICE_ACCOUNT = "default"

# ---------------------------------------------------------------------------- syntax checks

# Kubernetes' own rules (apimachinery validation), so a bad value stops start-up here and
# not at the first pod create.
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_TOLERATION_OPERATORS = ("Equal", "Exists")
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_EXAMPLES = {
    "kubernetes.env.secretKeyRef": "env:FOO_ENV,secret:foo_secret,key:foo_key",
    "kubernetes.taskmanager.tolerations": "key:k,operator:Equal,value:v,effect:NoSchedule",
}
_TOLERATION_FIELDS = {
    "key": "key",
    "operator": "operator",
    "value": "value",
    "effect": "effect",
    "tolerationseconds": "tolerationSeconds",
}


def _is_qualified_name(name: str) -> bool:
    """A label/annotation key: ``[prefix/]name``, prefix a DNS subdomain, name ≤ 63."""
    prefix, slash, base = name.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        return False
    return 0 < len(base) <= 63 and bool(_LABEL_NAME_RE.match(base))


def _is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE_RE.match(value))


def _is_dns_subdomain(name: str) -> bool:
    return 0 < len(name) <= 253 and bool(_DNS_SUBDOMAIN_RE.match(name))


def _error(key: str, message: str) -> ConfigError:
    """For values that come from RmdSettings (no configuration text at hand)."""
    return ConfigError(f"{key}: {message}", key=key)


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True, kw_only=True)
class Toleration:
    """One entry of ``kubernetes.taskmanager.tolerations``."""

    operator: str
    key: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    def to_manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {}
        if self.key is not None:
            manifest["key"] = self.key
        manifest["operator"] = self.operator
        if self.value is not None:
            manifest["value"] = self.value
        if self.effect is not None:
            manifest["effect"] = self.effect
        if self.toleration_seconds is not None:
            manifest["tolerationSeconds"] = self.toleration_seconds
        return manifest


@dataclass(frozen=True, kw_only=True)
class SecretEnv:
    """One entry of ``kubernetes.env.secretKeyRef``: env var ``env`` = ``secret``'s ``key``."""

    env: str
    secret: str
    key: str


@dataclass(frozen=True, kw_only=True)
class SecretMount:
    """One entry of ``kubernetes.secrets``: mount ``secret`` at ``mount_path``."""

    secret: str
    mount_path: str

    @property
    def volume_name(self) -> str:
        return f"{self.secret}-volume"  # Flink's name for the volume


@dataclass(frozen=True, kw_only=True)
class ExternalResource:
    """An extended resource: ``external-resource.<name>.{amount,kubernetes.config-key}``."""

    name: str
    config_key: str  # the Kubernetes resource name, e.g. nvidia.com/gpu
    amount: int


@dataclass(frozen=True, kw_only=True)
class TaskManagerPodOptions:
    """Every option that shapes a TaskManager pod, checked.

    ``*_explicit`` flags tell whether the user set the option (explicit config beats the pod
    template; the template beats the default).
    """

    cluster_id: str
    namespace: str
    # main container
    image: str
    image_explicit: bool
    image_pull_policy: str
    image_pull_policy_explicit: bool
    cpu: Decimal
    cpu_limit_factor: Decimal
    memory_mib: int
    memory_limit_factor: Decimal
    external_resources: tuple[ExternalResource, ...]
    rpc_port: int
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # containerized.taskmanager.env.<VAR>, in config order
    secret_env: tuple[SecretEnv, ...]
    secret_mounts: tuple[SecretMount, ...]
    log_dir: str | None
    # where the Flink configuration ConfigMap is mounted; None: no Flink to configure
    # (rmd.taskmanager.supervise-flink off)
    flink_conf_dir: str | None
    # agent
    resourcemanager_url: str
    slots: int
    heartbeat_interval: float
    auth_token_secret: str | None
    # pod
    service_account: str
    service_account_explicit: bool
    image_pull_secrets: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    node_selector: tuple[tuple[str, str], ...]
    tolerations: tuple[Toleration, ...]
    host_network: bool
    host_network_explicit: bool
    # the template: (key it came from, path)
    pod_template: tuple[str, Path] | None

    @classmethod
    def from_configuration(
        cls, conf: FlinkConfiguration, settings: RmdSettings
    ) -> TaskManagerPodOptions:
        return cls(
            cluster_id=settings.cluster_id,
            namespace=settings.namespace,
            image=settings.image,
            image_explicit=_is_set(conf, IMAGE_KEY, IMAGE_DEPRECATED_KEY),
            image_pull_policy=_pull_policy(conf),
            image_pull_policy_explicit=_is_set(conf, PULL_POLICY_KEY),
            cpu=_cpu(settings),
            cpu_limit_factor=_limit_factor(conf, CPU_LIMIT_FACTOR_KEY),
            memory_mib=_memory_mib(settings),
            memory_limit_factor=_limit_factor(conf, MEMORY_LIMIT_FACTOR_KEY),
            external_resources=_external_resources(conf),
            rpc_port=settings.taskmanager_rpc_port,
            command=_command(conf, settings),
            env=_env(conf),
            secret_env=_secret_env(conf),
            secret_mounts=_secret_mounts(conf),
            log_dir=conf.get_str(LOG_DIR_KEY) or None,
            flink_conf_dir=_flink_conf_dir(conf) if settings.supervise_flink else None,
            resourcemanager_url=settings.resourcemanager_url,
            slots=settings.slots_per_taskmanager,
            heartbeat_interval=settings.heartbeat_interval,
            auth_token_secret=settings.auth_token_secret,
            service_account=_service_account(conf),
            service_account_explicit=_is_set(
                conf, SERVICE_ACCOUNT_KEY, SERVICE_ACCOUNT_FALLBACK_KEY
            ),
            image_pull_secrets=_pull_secrets(conf),
            labels=_label_map(conf, LABELS_KEY, check_values=True),
            annotations=_annotation_map(conf),
            node_selector=_label_map(conf, NODE_SELECTOR_KEY, check_values=True),
            tolerations=_tolerations(conf),
            host_network=conf.get_bool(HOST_NETWORK_KEY, False),
            host_network_explicit=_is_set(conf, HOST_NETWORK_KEY),
            pod_template=_pod_template(conf),
        )


# ---------------------------------------------------------------------------- readers


def _is_set(conf: FlinkConfiguration, *keys: str) -> bool:
    return any(conf.raw(key) is not None for key in keys)


def _pull_policy(conf: FlinkConfiguration) -> str:
    raw = conf.get_str(PULL_POLICY_KEY, DEFAULT_PULL_POLICY) or DEFAULT_PULL_POLICY
    for policy in PULL_POLICIES:
        if raw.strip().lower() == policy.lower():
            return policy
    raise conf.invalid(
        PULL_POLICY_KEY,
        f"{raw!r} is not an image pull policy; use one of {', '.join(PULL_POLICIES)}",
    )


def _cpu(settings: RmdSettings) -> Decimal:
    cpu = Decimal(repr(float(settings.taskmanager_cpu)))
    if not cpu.is_finite() or cpu <= 0:
        raise _error(
            CPU_KEY,
            f"{settings.taskmanager_cpu} is not a CPU amount; set a positive number "
            f"(e.g. 1 or 0.5) or leave it unset to use the number of slots",
        )
    return cpu


def _limit_factor(conf: FlinkConfiguration, key: str) -> Decimal:
    factor = conf.get_float(key, 1.0)
    assert factor is not None  # a default is given
    if not factor >= 1.0 or factor == float("inf"):
        raise conf.invalid(
            key,
            f"{conf.raw(key)!r} is below 1; the limit is the request times this factor, "
            f"so it must be at least 1.0 (e.g. 1.0 for limit = request, 2.0 for twice)",
        )
    return Decimal(repr(factor))


def _memory_mib(settings: RmdSettings) -> int:
    mib = settings.taskmanager_memory_bytes >> 20
    if mib < 1:
        raise _error(
            MEMORY_KEY,
            f"{settings.taskmanager_memory_bytes} bytes is less than 1 MiB; set the "
            f"TaskManager's total process memory, e.g. 1728m",
        )
    return mib


def _external_resources(conf: FlinkConfiguration) -> tuple[ExternalResource, ...]:
    names = [name.strip() for name in conf.get_list(EXTERNAL_RESOURCES_KEY)]
    names = [name for name in names if name]
    if names == ["none"]:  # Flink's word for "no external resources"
        return ()
    resources: list[ExternalResource] = []
    for name in dict.fromkeys(names):
        if name == "none":
            raise conf.invalid(
                EXTERNAL_RESOURCES_KEY,
                "'none' is reserved (it means no external resources); rename the resource",
            )
        config_key_key = f"external-resource.{name}.kubernetes.config-key"
        amount_key = f"external-resource.{name}.amount"
        config_key = (conf.get_str(config_key_key) or "").strip()
        if not config_key:
            continue  # like Flink: a resource without a Kubernetes key is not requested here
        if not _is_qualified_name(config_key):
            raise conf.invalid(
                config_key_key,
                f"{config_key!r} is not a Kubernetes resource name; use e.g. nvidia.com/gpu",
            )
        if conf.raw(amount_key) is None:
            raise conf.invalid(
                amount_key,
                f"is not set but {EXTERNAL_RESOURCES_KEY} lists {name!r} with "
                f"{config_key_key}={config_key}; set the amount per TaskManager, e.g. 1",
            )
        amount = conf.get_int(amount_key, None, min_value=1)
        assert amount is not None
        resources.append(ExternalResource(name=name, config_key=config_key, amount=amount))
    return tuple(resources)


def _command(conf: FlinkConfiguration, settings: RmdSettings) -> tuple[str, ...]:
    agent = tuple(settings.agent_command)
    if not agent:
        raise _error(
            "rmd.taskmanager.agent-command",
            "is empty; set the TaskManager agent's command, e.g. 'rmd taskmanager'",
        )
    if not settings.supervise_flink:
        return agent
    entry_path = (conf.get_str(ENTRY_PATH_KEY, DEFAULT_ENTRY_PATH) or "").strip()
    if not entry_path:
        raise conf.invalid(
            ENTRY_PATH_KEY,
            f"is empty; set the image's entrypoint script (default {DEFAULT_ENTRY_PATH})",
        )
    raw_args = conf.get_str(ENTRYPOINT_ARGS_KEY, "") or ""
    try:
        args = shlex.split(raw_args)
    except ValueError as exc:
        raise conf.invalid(
            ENTRYPOINT_ARGS_KEY,
            f"{raw_args!r} cannot be split into arguments ({exc}); close the quotes",
        ) from None
    return (*agent, "--", entry_path, "taskmanager", *_flink_arguments(settings), *args)


def _flink_arguments(settings: RmdSettings) -> tuple[str, ...]:
    """Dynamic properties for Flink's TaskManager, written ``-D key=value``.

    Its resource id is the pod name (Flink's own native mode does the same), it binds and
    advertises the pod IP (``$(VAR)`` is expanded by the kubelet from the container's env),
    and its port, slots and memory are the ones the pod was sized and registered with.
    """
    properties = (
        f"taskmanager.resource-id=$({agent_env.POD_NAME})",
        f"taskmanager.host=$({agent_env.POD_IP})",
        f"taskmanager.bind-host=$({agent_env.POD_IP})",
        f"taskmanager.rpc.port={settings.taskmanager_rpc_port}",
        f"taskmanager.numberOfTaskSlots={settings.slots_per_taskmanager}",
        f"taskmanager.memory.process.size={_memory_mib(settings)}m",
    )
    return tuple(word for item in properties for word in ("-D", item))


def _flink_conf_dir(conf: FlinkConfiguration) -> str:
    value = (conf.get_str(CONF_DIR_KEY, DEFAULT_CONF_DIR) or "").strip()
    if not value.startswith("/"):
        raise conf.invalid(
            CONF_DIR_KEY,
            f"{value!r} is not an absolute path; set where the Flink configuration is mounted "
            f"in the TaskManager container (default {DEFAULT_CONF_DIR})",
        )
    return value.rstrip("/") or "/"


def _env(conf: FlinkConfiguration) -> tuple[tuple[str, str], ...]:
    env = conf.with_prefix(ENV_PREFIX)
    for name in env:
        if not _ENV_NAME_RE.match(name):
            raise conf.invalid(
                ENV_PREFIX + name,
                f"{name!r} is not an environment variable name; use letters, digits, "
                f"'_', '-' and '.', not starting with a digit",
            )
    return tuple(env.items())


def _list_of_maps(conf: FlinkConfiguration, key: str, *, what: str) -> list[dict[str, str]]:
    """``k1:v1,k2:v2;k1:v3`` (Flink's list of maps) → one dict per item, names lower-cased."""
    items: list[dict[str, str]] = []
    for item in conf.get_list(key):
        try:
            parsed = parse_map(item)
        except ValueError as exc:
            raise conf.invalid(
                key, f"{exc}; separate {what}s with ';', e.g. {_EXAMPLES[key]}"
            ) from None
        items.append({name.lower(): value for name, value in parsed.items()})
    return items


def _secret_env(conf: FlinkConfiguration) -> tuple[SecretEnv, ...]:
    entries: list[SecretEnv] = []
    example = _EXAMPLES[SECRET_ENV_KEY]
    for item in _list_of_maps(conf, SECRET_ENV_KEY, what="secret reference"):
        missing = [part for part in ("env", "secret", "key") if not item.get(part)]
        if missing:
            raise conf.invalid(
                SECRET_ENV_KEY,
                f"entry {_show(item)} lacks {', '.join(missing)}; every entry needs env, "
                f"secret and key, e.g. {example}",
            )
        unknown = sorted(set(item) - {"env", "secret", "key"})
        if unknown:
            raise conf.invalid(
                SECRET_ENV_KEY,
                f"entry {_show(item)} has unknown field(s) {', '.join(unknown)}; "
                f"use only env, secret and key, e.g. {example}",
            )
        if not _ENV_NAME_RE.match(item["env"]):
            raise conf.invalid(
                SECRET_ENV_KEY,
                f"{item['env']!r} is not an environment variable name; use letters, "
                f"digits, '_', '-' and '.'",
            )
        if not _is_dns_subdomain(item["secret"]):
            raise conf.invalid(
                SECRET_ENV_KEY,
                f"{item['secret']!r} is not a Secret name; use lower-case letters, "
                f"digits, '-' and '.'",
            )
        entries.append(SecretEnv(env=item["env"], secret=item["secret"], key=item["key"]))
    return tuple(entries)


def _show(item: Mapping[str, str]) -> str:
    return repr(",".join(f"{name}:{value}" for name, value in item.items()))


def _get_map(conf: FlinkConfiguration, key: str) -> dict[str, str]:
    return {name.strip(): value.strip() for name, value in conf.get_map(key).items()}


def _secret_mounts(conf: FlinkConfiguration) -> tuple[SecretMount, ...]:
    mounts: list[SecretMount] = []
    for secret, path in _get_map(conf, SECRETS_KEY).items():
        if not _is_dns_subdomain(secret):
            raise conf.invalid(
                SECRETS_KEY,
                f"{secret!r} is not a Secret name; use lower-case letters, digits, "
                f"'-' and '.', e.g. foo:/opt/secrets-foo",
            )
        if not path.startswith("/"):
            raise conf.invalid(
                SECRETS_KEY,
                f"mount path {path!r} of secret {secret!r} is not absolute; "
                f"write it like foo:/opt/secrets-foo",
            )
        mounts.append(SecretMount(secret=secret, mount_path=path))
    if len({mount.mount_path for mount in mounts}) != len(mounts):
        raise conf.invalid(SECRETS_KEY, "two secrets share one mount path; give each its own")
    return tuple(mounts)


def _service_account(conf: FlinkConfiguration) -> str:
    name = (
        conf.get_str(
            SERVICE_ACCOUNT_KEY,
            DEFAULT_SERVICE_ACCOUNT,
            fallback_keys=(SERVICE_ACCOUNT_FALLBACK_KEY,),
        )
        or ""
    ).strip()
    if not _is_dns_subdomain(name):
        key = (
            SERVICE_ACCOUNT_KEY
            if _is_set(conf, SERVICE_ACCOUNT_KEY)
            else (SERVICE_ACCOUNT_FALLBACK_KEY)
        )
        raise conf.invalid(
            key,
            f"{name!r} is not a ServiceAccount name; use lower-case letters, digits, '-' and '.'",
        )
    return name


def _pull_secrets(conf: FlinkConfiguration) -> tuple[str, ...]:
    names = [name.strip() for name in conf.get_list(PULL_SECRETS_KEY)]
    names = [name for name in names if name]
    for name in names:
        if not _is_dns_subdomain(name):
            raise conf.invalid(
                PULL_SECRETS_KEY,
                f"{name!r} is not a Secret name; list Secret names separated by ';'",
            )
    return tuple(dict.fromkeys(names))


def _label_map(
    conf: FlinkConfiguration, key: str, *, check_values: bool
) -> tuple[tuple[str, str], ...]:
    labels = _get_map(conf, key)
    for name, value in labels.items():
        if not _is_qualified_name(name):
            raise conf.invalid(
                key,
                f"{name!r} is not a valid label key; use [prefix/]name with letters, "
                f"digits, '-', '_' and '.' (name at most 63 characters)",
            )
        if check_values and not _is_label_value(value):
            raise conf.invalid(
                key,
                f"value {value!r} of {name!r} is not a valid label value; use at most 63 "
                f"letters, digits, '-', '_' and '.', starting and ending alphanumeric",
            )
    return tuple(labels.items())


def _annotation_map(conf: FlinkConfiguration) -> tuple[tuple[str, str], ...]:
    annotations = _get_map(conf, ANNOTATIONS_KEY)
    for name in annotations:
        if not _is_qualified_name(name):
            raise conf.invalid(
                ANNOTATIONS_KEY,
                f"{name!r} is not a valid annotation key; use [prefix/]name with letters, "
                f"digits, '-', '_' and '.'",
            )
    return tuple(annotations.items())


def _tolerations(conf: FlinkConfiguration) -> tuple[Toleration, ...]:
    example = _EXAMPLES[TOLERATIONS_KEY]
    tolerations: list[Toleration] = []
    for item in _list_of_maps(conf, TOLERATIONS_KEY, what="toleration"):
        unknown = sorted(set(item) - set(_TOLERATION_FIELDS))
        if unknown:
            raise conf.invalid(
                TOLERATIONS_KEY,
                f"toleration {_show(item)} has unknown field(s) {', '.join(unknown)}; use "
                f"key, operator, value, effect, tolerationSeconds",
            )
        operator = _choose(item.get("operator"), _TOLERATION_OPERATORS)
        if not item.get("operator"):
            raise conf.invalid(
                TOLERATIONS_KEY,
                f"toleration {_show(item)} has no operator; add operator:Equal (with a "
                f"value) or operator:Exists, e.g. {example}",
            )
        if operator is None:
            raise conf.invalid(
                TOLERATIONS_KEY,
                f"toleration {_show(item)} has operator {item['operator']!r}; use Equal or Exists",
            )
        effect: str | None = None
        if item.get("effect"):
            effect = _choose(item["effect"], _TOLERATION_EFFECTS)
            if effect is None:
                raise conf.invalid(
                    TOLERATIONS_KEY,
                    f"toleration {_show(item)} has effect {item['effect']!r}; use "
                    f"{', '.join(_TOLERATION_EFFECTS)} or leave it out for all effects",
                )
        key = item.get("key") or None
        value = item.get("value")
        if operator == "Exists" and value:
            raise conf.invalid(
                TOLERATIONS_KEY,
                f"toleration {_show(item)} has a value with operator Exists; drop the "
                f"value or use operator:Equal",
            )
        if key is None and operator != "Exists":
            raise conf.invalid(
                TOLERATIONS_KEY,
                f"toleration {_show(item)} has no key; an empty key needs operator:Exists",
            )
        if key is not None and not _is_qualified_name(key):
            raise conf.invalid(
                TOLERATIONS_KEY,
                f"toleration {_show(item)} has key {key!r}, which is not a valid taint key",
            )
        if operator == "Equal" and value and not _is_label_value(value):
            raise conf.invalid(
                TOLERATIONS_KEY,
                f"toleration {_show(item)} has value {value!r}, which is not a valid taint value",
            )
        seconds = _toleration_seconds(conf, item, effect=effect)
        tolerations.append(
            Toleration(
                key=key,
                operator=operator,
                value=value if operator == "Equal" else None,
                effect=effect,
                toleration_seconds=seconds,
            )
        )
    return tuple(tolerations)


def _toleration_seconds(
    conf: FlinkConfiguration, item: Mapping[str, str], *, effect: str | None
) -> int | None:
    raw = item.get("tolerationseconds")
    if not raw:
        return None
    try:
        seconds = int(raw)
    except ValueError:
        raise conf.invalid(
            TOLERATIONS_KEY,
            f"toleration {_show(item)} has tolerationSeconds {raw!r}; use whole seconds",
        ) from None
    if effect != "NoExecute":
        raise conf.invalid(
            TOLERATIONS_KEY,
            f"toleration {_show(item)} sets tolerationSeconds without effect:NoExecute; "
            f"Kubernetes allows it only with NoExecute",
        )
    return seconds


def _choose(raw: str | None, choices: Sequence[str]) -> str | None:
    """``raw`` matched case-insensitively against ``choices`` (Flink is lenient here)."""
    if raw is None:
        return None
    for choice in choices:
        if raw.strip().lower() == choice.lower():
            return choice
    return None


def _pod_template(conf: FlinkConfiguration) -> tuple[str, Path] | None:
    for key in (POD_TEMPLATE_KEY, *POD_TEMPLATE_FALLBACK_KEYS):
        raw = conf.raw(key)
        if raw is not None and raw.strip():
            return key, Path(raw.strip()).expanduser()
    return None


# ---------------------------------------------------------------------------- quantities


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
