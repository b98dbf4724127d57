"""Flink's JobManager pod options, read and checked once: what ``rmd session start`` deploys.

:meth:`JobManagerPodOptions.from_configuration` reads the JobManager options of the table
(:mod:`rmd.config.options`) with the same parsers as the TaskManager pod's; a bad value is a
:class:`~rmd.config.errors.ConfigError` naming the key and the fix. The image, pull policy,
pull secrets and the configuration directory are shared with the TaskManager pod
(:class:`~rmd.config.podoptions.TaskManagerPodOptions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from rmd.config import options as opt
from rmd.config.flinkconf import FlinkConfiguration
from rmd.config.pod_placement import Toleration
from rmd.config.podoptions import env_variables


@dataclass(frozen=True, kw_only=True)
class JobManagerPodOptions:
    """Every option that shapes the JobManager Deployment and its Services, checked."""

    replicas: int
    cpu: Decimal
    cpu_limit_factor: Decimal
    memory_mib: int
    memory_limit_factor: Decimal
    service_account: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    node_selector: tuple[tuple[str, str], ...]
    tolerations: tuple[Toleration, ...]
    env: tuple[tuple[str, str], ...]  # containerized.master.env.<VAR>, in config order
    entry_path: str
    entrypoint_args: tuple[str, ...]
    pod_template: tuple[str, Path] | None  # (key it came from, path)
    rpc_port: int
    blob_port: int
    rest_port: int
    rest_service_type: str

    @classmethod
    def from_configuration(cls, conf: FlinkConfiguration) -> JobManagerPodOptions:
        """The JobManager's options; raises ConfigError on the first bad value."""
        template = conf.get_optional(opt.JOBMANAGER_POD_TEMPLATE)
        template_key = conf.key_used(opt.JOBMANAGER_POD_TEMPLATE)
        return cls(
            replicas=conf.get(opt.JOBMANAGER_REPLICAS),
            cpu=Decimal(repr(float(conf.get(opt.JOBMANAGER_CPU)))),
            cpu_limit_factor=conf.get(opt.JOBMANAGER_CPU_LIMIT_FACTOR),
            memory_mib=conf.get(opt.JOBMANAGER_MEMORY) >> 20,
            memory_limit_factor=conf.get(opt.JOBMANAGER_MEMORY_LIMIT_FACTOR),
            service_account=conf.get(opt.JOBMANAGER_SERVICE_ACCOUNT),
            labels=conf.get(opt.JOBMANAGER_LABELS),
            annotations=conf.get(opt.JOBMANAGER_ANNOTATIONS),
            node_selector=conf.get(opt.JOBMANAGER_NODE_SELECTOR),
            tolerations=conf.get_optional(opt.JOBMANAGER_TOLERATIONS) or (),
            env=env_variables(conf, opt.JOBMANAGER_ENV_VARIABLE),
            entry_path=conf.get(opt.JOBMANAGER_ENTRY_PATH),
            entrypoint_args=conf.get_optional(opt.JOBMANAGER_ENTRYPOINT_ARGS) or (),
            pod_template=None
            if template is None or template_key is None
            else (template_key, template),
            rpc_port=conf.get(opt.JOBMANAGER_RPC_PORT),
            blob_port=conf.get(opt.BLOB_SERVER_PORT),
            rest_port=conf.get(opt.FLINK_REST_PORT),
            rest_service_type=conf.get(opt.REST_SERVICE_TYPE),
        )
