"""The ``flink-config-<cluster-id>`` ConfigMap: the Flink configuration TaskManagers start with.

As in Flink's native Kubernetes mode, every TaskManager pod mounts one ConfigMap, owned by the
JobManager Deployment, that holds ``config.yaml`` and the console logging configuration
(``log4j-console.properties``, ``logback-console.xml``) of the JobManager's configuration
directory. The daemon shares that directory with Flink's JobManager (same pod), so what it
publishes at start-up is the configuration the JobManager has: the file plus the ``-D``
overrides the daemon was given, written as flat ``key: 'value'`` lines (Flink 1.19+ and 2.x
read them from ``config.yaml``).

The TaskManagers must reach the JobManager: ``jobmanager.rpc.address`` is taken from the
configuration; when it is not set, the daemon's own pod IP (``_POD_IP_ADDRESS``, which Flink's
JobManager pods get from ``status.podIP``) is written instead, since the daemon runs in the
JobManager pod; without that, the JobManager Service ``<cluster-id>.<namespace>`` (the name
Flink's native mode gives its TaskManagers).

Publishing (:func:`publish_flink_config_map`) is idempotent and safe against concurrent
writers: create; on 409 read and replace with the read ``resourceVersion``; on a conflicting
replace read again; nothing is written when the ConfigMap already holds the same data and
owner.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import structlog
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.config import options as opt
from rmd.config.files import CONFIG_YAML
from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.settings import RmdSettings
from rmd.kube.podspec import (
    LABEL_APP,
    LABEL_TYPE,
    LABEL_TYPE_NATIVE,
    OwnerReference,
    flink_config_map_name,
)
from rmd.kube.retry import KUBE_CALL_RETRY, api_error_message, call_with_retries
from rmd.retry import RetryPolicy

log = structlog.get_logger(__name__)

JOBMANAGER_ADDRESS_KEY = "jobmanager.rpc.address"
POD_IP_VARIABLE = "_POD_IP_ADDRESS"  # the JobManager pod's IP (downward API), Flink's name
LOG_CONFIG_FILES = ("log4j-console.properties", "logback-console.xml")
TASKMANAGER_POD_TEMPLATE_FILE = "taskmanager-pod-template.yaml"  # Flink's name for it
MAX_WRITE_ATTEMPTS = 5  # create/replace rounds lost to concurrent writers before giving up


class ConfigMapPublishError(RuntimeError):
    """The ConfigMap could not be written; the message names the cause and the fix."""


@dataclass(frozen=True, kw_only=True)
class FlinkConfigMap:
    """The ConfigMap's identity and content (no owner: that is known only at run time)."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    data: Mapping[str, str] = field(default_factory=dict)

    def manifest(self, *, owner: OwnerReference | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": dict(self.labels),
        }
        if owner is not None:
            metadata["ownerReferences"] = [owner.to_manifest()]
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": dict(self.data),
        }


def jobmanager_address(
    conf: FlinkConfiguration, settings: RmdSettings, *, environ: Mapping[str, str]
) -> str:
    """Where TaskManagers reach the JobManager: the configured address, else this pod's IP,
    else the JobManager Service."""
    configured = conf.get_str(JOBMANAGER_ADDRESS_KEY)
    if configured:
        return configured
    pod_ip = environ.get(POD_IP_VARIABLE, "").strip()
    if pod_ip:
        return pod_ip
    return f"{settings.cluster_id}.{settings.namespace}"


def render_config_yaml(values: Mapping[str, str]) -> str:
    """Flat ``key: 'value'`` lines, sorted, every value a YAML string (Flink parses it)."""
    header = "# Written by rmd: the JobManager's Flink configuration, for its TaskManagers.\n"
    body = yaml.safe_dump(
        {key: str(values[key]) for key in sorted(values)},
        default_flow_style=False,
        sort_keys=False,
        allow_unicode=True,
        width=1 << 16,  # one line per key, however long (env.java.opts.all)
    )
    return header + body


def config_map_data(
    values: Mapping[str, str],
    *,
    log_files: Mapping[str, str],
    taskmanager_pod_template: str | None,
    conf_dir: str,
) -> dict[str, str]:
    """``config.yaml`` with ``values``, the console logging files and, as Flink's ConfigMap
    has it, ``taskmanager-pod-template.yaml``: then ``config.yaml`` names the template's copy
    in this ConfigMap, mounted at ``conf_dir`` in the JobManager pod, where the daemon reads
    it (the path it was given points into the machine that ran ``rmd session start``)."""
    values = dict(values)
    data: dict[str, str] = {}
    if taskmanager_pod_template is not None:
        values[opt.POD_TEMPLATE.key] = f"{conf_dir.rstrip('/')}/{TASKMANAGER_POD_TEMPLATE_FILE}"
        data[TASKMANAGER_POD_TEMPLATE_FILE] = taskmanager_pod_template
    data[CONFIG_YAML] = render_config_yaml(values)
    data.update({name: log_files[name] for name in LOG_CONFIG_FILES if name in log_files})
    return data


def flink_config_map(
    conf: FlinkConfiguration,
    settings: RmdSettings,
    *,
    log_files: Mapping[str, str],
    environ: Mapping[str, str],
    taskmanager_pod_template: str | None = None,
) -> FlinkConfigMap:
    """The ConfigMap for this configuration (pure; ``log_files`` are the logging files'
    contents by name, from :func:`read_log_config_files`; ``taskmanager_pod_template`` the
    template file's text, when one is configured)."""
    values = conf.as_dict()
    values[JOBMANAGER_ADDRESS_KEY] = jobmanager_address(conf, settings, environ=environ)
    data = config_map_data(
        values,
        log_files=log_files,
        taskmanager_pod_template=taskmanager_pod_template,
        conf_dir=conf.get(opt.CONF_DIR),
    )
    return FlinkConfigMap(
        name=flink_config_map_name(settings.cluster_id),
        namespace=settings.namespace,
        labels={LABEL_TYPE: LABEL_TYPE_NATIVE, LABEL_APP: settings.cluster_id},
        data=data,
    )


def read_log_config_files(conf_dir: Path) -> dict[str, str]:
    """The console logging files present in ``conf_dir``, by name; a ConfigError if one
    exists but cannot be read."""
    found: dict[str, str] = {}
    for name in LOG_CONFIG_FILES:
        path = conf_dir / name
        if not path.is_file():
            continue
        try:
            found[name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"{path}: cannot be read ({error}); fix or remove it (TaskManagers get it "
                f"in the {flink_config_map_name('<cluster-id>')} ConfigMap)"
            ) from None
    return found


async def publish_flink_config_map(
    api: client.ApiClient,
    config_map: FlinkConfigMap,
    *,
    owner: OwnerReference | None,
    timeout: float,
    retry: RetryPolicy = KUBE_CALL_RETRY,
    field_manager: str | None = None,
) -> str:
    """Create or update the ConfigMap; returns ``created``, ``updated`` or ``unchanged``.
    ``field_manager``: sent with the write (``metadata.managedFields`` names the writer).

    Transient errors are retried; a lost race to another writer is retried from a fresh
    read; anything else raises :class:`ConfigMapPublishError`.
    """
    core = client.CoreV1Api(api)
    # the stubs type field_manager as str: left out rather than None when not given
    manager: dict[str, Any] = {} if field_manager is None else {"field_manager": field_manager}
    name, namespace = config_map.name, config_map.namespace
    wanted = config_map.manifest(owner=owner)
    what = f"configmap {namespace}/{name}"
    try:
        for _ in range(MAX_WRITE_ATTEMPTS):
            current = await _read(
                core, name=name, namespace=namespace, timeout=timeout, retry=retry
            )
            if current is None:
                try:
                    await _write(
                        functools.partial(core.create_namespaced_config_map, **manager),
                        namespace,
                        wanted,
                        timeout=timeout,
                        retry=retry,
                        what=f"create {what}",
                    )
                except ApiException as exc:
                    if exc.status == 409:
                        continue  # created by someone else meanwhile: read it
                    raise
                return "created"
            if _same(current, wanted):
                return "unchanged"
            version = current.metadata.resource_version
            body = {**wanted, "metadata": {**wanted["metadata"], "resourceVersion": version}}
            try:
                await _write(
                    functools.partial(core.replace_namespaced_config_map, name, **manager),
                    namespace,
                    body,
                    timeout=timeout,
                    retry=retry,
                    what=f"replace {what}",
                )
            except ApiException as exc:
                if exc.status in (404, 409):
                    continue  # deleted or changed meanwhile: read again
                raise
            return "updated"
    except ApiException as exc:
        fix = (
            "grant get, create and update on configmaps to the daemon's service account "
            "(conf/kubernetes/rbac.yaml)"
            if exc.status == 403
            else "check the API server"
        )
        raise ConfigMapPublishError(
            f"cannot write {what} (HTTP {exc.status}: {api_error_message(exc)}); {fix}"
        ) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ConfigMapPublishError(
            f"cannot write {what}: the API server did not answer ({type(exc).__name__}: "
            f"{exc}); check the API server and the kubeconfig"
        ) from exc
    raise ConfigMapPublishError(
        f"cannot write {what}: {MAX_WRITE_ATTEMPTS} attempts lost to concurrent writers"
    )


async def _write(
    call: Callable[..., Awaitable[Any]],
    namespace: str,
    body: dict[str, Any],
    *,
    timeout: float,
    retry: RetryPolicy,
    what: str,
) -> None:
    """One create or replace, transient errors retried; a 409 or 404 is the caller's to judge.

    (The client accepts a plain dict although its stubs ask for V1ConfigMap.)"""
    model = cast(client.V1ConfigMap, body)
    await call_with_retries(
        lambda: call(namespace, body=model, _request_timeout=timeout), policy=retry, what=what
    )


async def _read(
    core: client.CoreV1Api, *, name: str, namespace: str, timeout: float, retry: RetryPolicy
) -> Any:
    try:
        return await call_with_retries(
            lambda: core.read_namespaced_config_map(name, namespace, _request_timeout=timeout),
            policy=retry,
            what=f"read configmap {namespace}/{name}",
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _same(current: Any, wanted: Mapping[str, Any]) -> bool:
    owners = [(ref.kind, ref.name, ref.uid) for ref in (current.metadata.owner_references or [])]
    wanted_owners = [
        (ref["kind"], ref["name"], ref["uid"])
        for ref in wanted["metadata"].get("ownerReferences", [])
    ]
    labels = dict(current.metadata.labels or {})
    return (
        dict(current.data or {}) == wanted["data"]
        and owners == wanted_owners
        and all(labels.get(key) == value for key, value in wanted["metadata"]["labels"].items())
    )
