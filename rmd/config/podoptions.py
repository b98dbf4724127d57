"""Flink's TaskManager pod options, read and checked once: everything the pod spec needs.

:meth:`TaskManagerPodOptions.from_configuration` reads the options of the table
(:mod:`rmd.config.options`) whose parsers live in ``pod_resources``, ``pod_placement`` and
``pod_environment``; a bad value is a :class:`~rmd.config.errors.ConfigError` naming the key,
the value, what was expected and how to fix it. Nothing here builds the pod
(``rmd.kube.podspec`` does) or reads the pod template (``rmd.kube.podtemplate`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from rmd.config import agent_env
from rmd.config import options as opt
from rmd.config.flinkconf import FlinkConfiguration
from rmd.config.option import ConfigOption
from rmd.config.pod_environment import SecretEnv, SecretMount, check_env_var_name
from rmd.config.pod_placement import Toleration
from rmd.config.pod_resources import ExternalResource
from rmd.config.settings import RmdSettings
from rmd.flink.taskmanager_memory import KUBERNETES_TASKMANAGER_SCRIPT, TaskManagerMemory

__all__ = [
    "ExternalResource",
    "SecretEnv",
    "SecretMount",
    "TaskManagerPodOptions",
    "Toleration",
]


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
    # FLINK_TM_JVM_MEM_OPTS when the command starts kubernetes-taskmanager.sh with memory
    # precomputed by the daemon; None: taskmanager.sh computes it in the pod
    jvm_memory_options: str | None
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
        cls,
        conf: FlinkConfiguration,
        settings: RmdSettings,
        *,
        memory: TaskManagerMemory | None = None,
    ) -> TaskManagerPodOptions:
        """The pod's options; CPU, memory, image and the agent's settings come from
        ``settings`` (checked there), the rest from ``conf``. Raises ConfigError.

        ``memory``: the JVM memory options Flink's code computed for
        :func:`taskmanager_arguments` (the daemon does it once); the pod then starts
        ``kubernetes-taskmanager.sh`` with them, as Flink's native mode does, instead of
        ``taskmanager.sh``, which would compute them again in a helper JVM."""
        return cls(
            cluster_id=settings.cluster_id,
            namespace=settings.namespace,
            image=settings.image,
            image_explicit=conf.is_set(opt.IMAGE),
            image_pull_policy=conf.get(opt.PULL_POLICY),
            image_pull_policy_explicit=conf.is_set(opt.PULL_POLICY),
            cpu=Decimal(repr(float(settings.taskmanager_cpu))),
            cpu_limit_factor=conf.get(opt.CPU_LIMIT_FACTOR),
            memory_mib=settings.taskmanager_memory_bytes >> 20,
            memory_limit_factor=conf.get(opt.MEMORY_LIMIT_FACTOR),
            external_resources=_external_resources(conf),
            rpc_port=settings.taskmanager_rpc_port,
            command=_command(conf, settings, memory=memory),
            jvm_memory_options=(
                memory.jvm_options_env if memory is not None and settings.supervise_flink else None
            ),
            env=env_variables(conf, opt.ENV_VARIABLE),
            secret_env=conf.get_optional(opt.SECRET_ENV) or (),
            secret_mounts=conf.get(opt.SECRETS),
            log_dir=conf.get_optional(opt.LOG_DIR),
            flink_conf_dir=conf.get(opt.CONF_DIR) if settings.supervise_flink else None,
            resourcemanager_url=settings.resourcemanager_url,
            slots=settings.slots_per_taskmanager,
            heartbeat_interval=settings.heartbeat_interval,
            auth_token_secret=settings.auth_token_secret,
            service_account=conf.get(opt.SERVICE_ACCOUNT),
            service_account_explicit=conf.is_set(opt.SERVICE_ACCOUNT),
            image_pull_secrets=conf.get_optional(opt.PULL_SECRETS) or (),
            labels=conf.get(opt.LABELS),
            annotations=conf.get(opt.ANNOTATIONS),
            node_selector=conf.get(opt.NODE_SELECTOR),
            tolerations=conf.get_optional(opt.TOLERATIONS) or (),
            host_network=conf.get(opt.HOST_NETWORK),
            host_network_explicit=conf.is_set(opt.HOST_NETWORK),
            pod_template=_pod_template(conf),
        )


def _external_resources(conf: FlinkConfiguration) -> tuple[ExternalResource, ...]:
    resources: list[ExternalResource] = []
    for name in conf.get_optional(opt.EXTERNAL_RESOURCES) or ():
        config_key_option = opt.EXTERNAL_RESOURCE_CONFIG_KEY.for_name(name)
        amount_option = opt.EXTERNAL_RESOURCE_AMOUNT.for_name(name)
        config_key = conf.get_optional(config_key_option)
        if not config_key:
            continue  # like Flink: a resource without a Kubernetes key is not requested here
        amount = conf.get_optional(amount_option)
        if amount is None:
            raise conf.invalid(
                amount_option.key,
                f"is not set but {opt.EXTERNAL_RESOURCES.key} lists {name!r} with "
                f"{config_key_option.key}={config_key}; set the amount per TaskManager, e.g. 1",
            )
        resources.append(ExternalResource(name=name, config_key=config_key, amount=amount))
    return tuple(resources)


def taskmanager_arguments(conf: FlinkConfiguration, settings: RmdSettings) -> tuple[str, ...]:
    """The arguments Flink's TaskManager script gets after the role: rmd's ``-D`` properties,
    then ``kubernetes.taskmanager.entrypoint.args``."""
    return (*_flink_arguments(settings), *(conf.get_optional(opt.ENTRYPOINT_ARGS) or ()))


def _command(
    conf: FlinkConfiguration, settings: RmdSettings, *, memory: TaskManagerMemory | None
) -> tuple[str, ...]:
    agent = tuple(settings.agent_command)
    if not settings.supervise_flink:
        return agent
    entry_path = conf.get(opt.ENTRY_PATH)
    arguments = taskmanager_arguments(conf, settings)
    if memory is None:
        return (*agent, "--", entry_path, "taskmanager", *arguments)
    # taskmanager.sh's order: the computed properties first, then the given arguments.
    script = KUBERNETES_TASKMANAGER_SCRIPT
    return (*agent, "--", entry_path, script, *memory.dynamic_properties, *arguments)


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
        f"taskmanager.memory.process.size={settings.taskmanager_memory_bytes >> 20}m",
    )
    return tuple(word for item in properties for word in ("-D", item))


def env_variables(
    conf: FlinkConfiguration, family: ConfigOption[str]
) -> tuple[tuple[str, str], ...]:
    """The container's environment variables from a ``...env.<name>`` key family, each name
    checked (a bad one is an error naming its key)."""
    env: list[tuple[str, str]] = []
    for name in conf.with_prefix(family.family_prefix):
        option = family.for_name(name)
        try:
            check_env_var_name(name)
        except ValueError as error:
            raise conf.invalid(option.key, str(error)) from None
        env.append((name, conf.get(option)))
    return tuple(env)


def _pod_template(conf: FlinkConfiguration) -> tuple[str, Path] | None:
    path = conf.get_optional(opt.POD_TEMPLATE)
    key = conf.key_used(opt.POD_TEMPLATE)
    return None if path is None or key is None else (key, path)
