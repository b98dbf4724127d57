"""The objects of a session cluster, as Flink's native Kubernetes mode makes them (pure).

One :class:`SessionPlan` holds, checked: the JobManager Deployment ``<cluster-id>``, the
internal headless Service ``<cluster-id>`` (JobManager RPC, blob server, the rmd daemon's
API the TaskManager agents call), the REST Service ``<cluster-id>-rest`` (type from
``kubernetes.rest-service.exposed.type``) and the ConfigMap ``flink-config-<cluster-id>``
(the Flink configuration and console logging files the JobManager pod mounts). All carry
Flink's labels (``type=flink-native-kubernetes``, ``app=<cluster-id>``); everything but the
Deployment gets an ownerReference to it, so deleting the Deployment removes the cluster.

The JobManager pod runs the rmd image's entrypoint role ``jobmanager`` (the rmd daemon and
Flink's JobManager): ``<rmd.jobmanager.entry-path> jobmanager <entrypoint args>``. An
application cluster (``rmd application start``, :class:`ApplicationProgram`) is the same
cluster whose JobManager runs the job's jar: the role ``application`` (Flink's
``standalone-job``) with ``--jars <uri> [--job-classname <class>] <entrypoint args> --
<program args>``, and ``execution.target: kubernetes-application`` in the configuration,
which tells the daemon to remove the cluster when the application has ended.
Its pod template (``kubernetes.pod-template-file.jobmanager``) is merged as the TaskManager's
is: labels, annotations, nodeSelector, tolerations, env, volumes merged (config wins), the
main container's name, command, resources and the selector labels are rmd's. The main
container is Ready when Flink's REST API answers (:data:`READINESS_PROBE`, unless the
template has a readinessProbe of its own).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rmd.config import agent_env
from rmd.config import options as opt
from rmd.config.flinkconf import FlinkConfiguration
from rmd.config.jobmanager_options import JobManagerPodOptions
from rmd.config.podoptions import TaskManagerPodOptions
from rmd.config.settings import APPLICATION_TARGET, RmdSettings
from rmd.kube.flinkconfigmap import POD_IP_VARIABLE, FlinkConfigMap, config_map_data
from rmd.kube.podspec import (
    FLINK_CONFIG_VOLUME,
    LABEL_APP,
    LABEL_COMPONENT,
    LABEL_TYPE,
    LABEL_TYPE_NATIVE,
    OwnerReference,
    cpu_quantity,
    flink_config_map_name,
    memory_quantity,
    merge_named,
)
from rmd.kube.podtemplate import MAIN_CONTAINER_NAME, PodTemplate

JsonDict = dict[str, Any]

LABEL_COMPONENT_JOBMANAGER = "jobmanager"
APPLICATION_ROLE = "application"  # the image entrypoint's role of an application cluster
REST_PORT_NAME = "rest"
RPC_PORT_NAME = "jobmanager-rpc"
BLOB_PORT_NAME = "blobserver"
DAEMON_PORT_NAME = "rmd"

# Ready = Flink's REST API answers: the REST Service sends users only to such a pod, and
# `rmd session start` returns once it is so. (Not the daemon's /readyz: a daemon that cannot
# watch pods for a while must not take Flink's REST API out of its Service.) No liveness
# probe: restarting the container would kill the running jobs (no HA here) for what may be
# a long GC pause; when either process of the pod ends, the entrypoint ends the pod.
READINESS_PROBE: JsonDict = {
    "httpGet": {"path": "/config", "port": REST_PORT_NAME},
    "periodSeconds": 2,
    "timeoutSeconds": 2,
    "failureThreshold": 3,
}


# resourcemanager.previous-worker.recovery.timeout of a session or application cluster unless
# set: a restarted daemon waits this long for the adopted TaskManagers to register again
# before it creates pods for the demand they may cover (exact restarts; README "Restarts").
SESSION_RECOVERY_TIMEOUT = "1 min"


def jobmanager_labels(cluster_id: str) -> dict[str, str]:
    """The selector labels of the JobManager pods (Flink's)."""
    return {
        LABEL_TYPE: LABEL_TYPE_NATIVE,
        LABEL_APP: cluster_id,
        LABEL_COMPONENT: LABEL_COMPONENT_JOBMANAGER,
    }


def scrape_annotations(*, port: int) -> dict[str, str]:
    """The Prometheus convention (``prometheus.io/scrape``, ``port``, ``path``) that a
    ``kubernetes_sd_configs`` pod role with the usual relabelling turns into a target: the
    daemon's ``/metrics`` on ``rmd.rest.port`` of the JobManager pod. A pod template or
    ``kubernetes.jobmanager.annotations`` may override each."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def cluster_labels(cluster_id: str) -> dict[str, str]:
    """The labels every object of the cluster carries."""
    return {LABEL_TYPE: LABEL_TYPE_NATIVE, LABEL_APP: cluster_id}


def rest_service_name(cluster_id: str) -> str:
    return f"{cluster_id}-rest"


@dataclass(frozen=True, kw_only=True)
class ApplicationProgram:
    """The program an application cluster's JobManager runs (checked by
    :mod:`rmd.session.application`)."""

    jar_uri: str  # as Flink's --jars takes it: local:///path/in/the/image.jar
    main_class: str | None  # None: the jar manifest's
    arguments: tuple[str, ...] = ()

    def entrypoint_args(self, extra: Iterable[str]) -> list[str]:
        """The ``application`` role's arguments: Flink's options, ``extra``, ``--``, the
        program's arguments."""
        named = ["--job-classname", self.main_class] if self.main_class else []
        return [APPLICATION_ROLE, "--jars", self.jar_uri, *named, *extra, "--", *self.arguments]


@dataclass(frozen=True, kw_only=True)
class SessionPlan:
    """What ``rmd session start`` (and ``rmd application start``) creates, built from
    checked options."""

    cluster_id: str
    namespace: str
    jobmanager: JobManagerPodOptions
    deployment: JsonDict
    internal_service: JsonDict
    rest_service: JsonDict
    config_map: FlinkConfigMap
    application: ApplicationProgram | None = None
    # execution.shutdown-on-application-finish: the application cluster removes itself
    shutdown_on_application_finish: bool = True

    @property
    def kind(self) -> str:
        """``session`` or ``application``, for messages."""
        return "session" if self.application is None else "application"

    def owned(self, owner: OwnerReference) -> list[tuple[str, JsonDict]]:
        """The objects created after the Deployment, each with its ownerReference:
        (kind, manifest) in creation order."""
        services = []
        for service in (self.internal_service, self.rest_service):
            owned = copy.deepcopy(service)
            owned["metadata"]["ownerReferences"] = [owner.to_manifest()]
            services.append(("Service", owned))
        return [("ConfigMap", self.config_map.manifest(owner=owner)), *services]


def session_plan(
    conf: FlinkConfiguration,
    settings: RmdSettings,
    *,
    taskmanager: TaskManagerPodOptions,
    jobmanager: JobManagerPodOptions,
    template: PodTemplate,
    log_files: Mapping[str, str],
    taskmanager_pod_template: str | None = None,
    application: ApplicationProgram | None = None,
) -> SessionPlan:
    """Every object of the session cluster (with ``application``: of the application
    cluster); raises ConfigError for a bad combination. ``taskmanager_pod_template``: the
    TaskManager pod template file's text, if configured (it goes into the ConfigMap, see
    :func:`rmd.kube.flinkconfigmap.config_map_data`)."""
    cluster_id, namespace = settings.cluster_id, settings.namespace
    conf_dir = taskmanager.flink_conf_dir or opt.CONF_DIR.default_value()
    values = conf.as_dict()
    if not conf.is_set(opt.FLINK_REST_URL):
        # The daemon shares the JobManager pod: it follows Flink's REST API there.
        values[opt.FLINK_REST_URL.key] = f"http://localhost:{jobmanager.rest_port}"
    if not conf.is_set(opt.RECOVERY_TIMEOUT):
        # Flink's 0 s would let a restarted daemon create pods beside the adopted ones.
        values[opt.RECOVERY_TIMEOUT.key] = SESSION_RECOVERY_TIMEOUT
    if application is not None:
        values[opt.EXECUTION_TARGET.key] = APPLICATION_TARGET
    data = config_map_data(
        values,
        log_files=log_files,
        taskmanager_pod_template=taskmanager_pod_template,
        conf_dir=conf_dir,
    )
    config_map = FlinkConfigMap(
        name=flink_config_map_name(cluster_id),
        namespace=namespace,
        labels=cluster_labels(cluster_id),
        data=data,
    )
    return SessionPlan(
        cluster_id=cluster_id,
        namespace=namespace,
        jobmanager=jobmanager,
        deployment=_deployment(
            settings,
            taskmanager=taskmanager,
            jobmanager=jobmanager,
            template=template,
            conf_dir=conf_dir,
            application=application,
        ),
        internal_service=_service(
            name=cluster_id,
            namespace=namespace,
            cluster_id=cluster_id,
            service_type=None,
            ports=[
                (RPC_PORT_NAME, jobmanager.rpc_port),
                (BLOB_PORT_NAME, jobmanager.blob_port),
                (DAEMON_PORT_NAME, settings.rest_port),
            ],
        ),
        rest_service=_service(
            name=rest_service_name(cluster_id),
            namespace=namespace,
            cluster_id=cluster_id,
            service_type=jobmanager.rest_service_type,
            ports=[(REST_PORT_NAME, jobmanager.rest_port)],
        ),
        config_map=config_map,
        application=application,
        shutdown_on_application_finish=settings.shutdown_on_application_finish,
    )


def _service(
    *,
    name: str,
    namespace: str,
    cluster_id: str,
    service_type: str | None,
    ports: Iterable[tuple[str, int]],
) -> JsonDict:
    """A Service selecting the JobManager pods; ``service_type`` None: headless ClusterIP."""
    spec: JsonDict = {}
    if service_type is None:
        spec["clusterIP"] = "None"
        spec["type"] = "ClusterIP"
    else:
        spec["type"] = service_type
    spec["selector"] = jobmanager_labels(cluster_id)
    spec["ports"] = [
        {"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}
        for port_name, port in ports
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": cluster_labels(cluster_id)},
        "spec": spec,
    }


def _deployment(
    settings: RmdSettings,
    *,
    taskmanager: TaskManagerPodOptions,
    jobmanager: JobManagerPodOptions,
    template: PodTemplate,
    conf_dir: str,
    application: ApplicationProgram | None,
) -> JsonDict:
    cluster_id = settings.cluster_id
    selector = jobmanager_labels(cluster_id)
    source = copy.deepcopy(template.pod)
    source_metadata = source.get("metadata") or {}
    labels = {**(source_metadata.get("labels") or {}), **dict(jobmanager.labels), **selector}
    annotations = {
        **scrape_annotations(port=settings.rest_port),
        **(source_metadata.get("annotations") or {}),
        **dict(jobmanager.annotations),
    }
    pod_metadata: JsonDict = {"labels": labels, "annotations": annotations}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": cluster_id,
            "namespace": settings.namespace,
            "labels": {**dict(jobmanager.labels), **selector},
        },
        "spec": {
            "replicas": jobmanager.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": pod_metadata,
                "spec": _pod_spec(
                    settings,
                    taskmanager=taskmanager,
                    jobmanager=jobmanager,
                    source=source.get("spec") or {},
                    template=template,
                    conf_dir=conf_dir,
                    application=application,
                ),
            },
        },
    }


def _pod_spec(
    settings: RmdSettings,
    *,
    taskmanager: TaskManagerPodOptions,
    jobmanager: JobManagerPodOptions,
    source: JsonDict,
    template: PodTemplate,
    conf_dir: str,
    application: ApplicationProgram | None,
) -> JsonDict:
    spec: JsonDict = {
        key: value
        for key, value in source.items()
        if key not in ("containers", "volumes", "nodeSelector", "tolerations", "imagePullSecrets")
    }
    spec["serviceAccountName"] = jobmanager.service_account
    spec.pop("serviceAccount", None)
    node_selector = {**(source.get("nodeSelector") or {}), **dict(jobmanager.node_selector)}
    if node_selector:
        spec["nodeSelector"] = node_selector
    tolerations = list(source.get("tolerations") or [])
    for toleration in jobmanager.tolerations:
        if (manifest := toleration.to_manifest()) not in tolerations:
            tolerations.append(manifest)
    if tolerations:
        spec["tolerations"] = tolerations
    pull_secrets = list(source.get("imagePullSecrets") or [])
    known = {entry.get("name") for entry in pull_secrets}
    pull_secrets += [{"name": name} for name in taskmanager.image_pull_secrets if name not in known]
    if pull_secrets:
        spec["imagePullSecrets"] = pull_secrets
    containers = list(source.get("containers") or [])
    main = _main_container(
        settings,
        taskmanager=taskmanager,
        jobmanager=jobmanager,
        source=template.main_container,
        conf_dir=conf_dir,
        application=application,
    )
    containers.insert(min(template.main_index, len(containers)), main)
    spec["containers"] = containers
    spec["volumes"] = merge_named(
        source.get("volumes") or [],
        [
            {
                "name": FLINK_CONFIG_VOLUME,
                "configMap": {"name": flink_config_map_name(settings.cluster_id)},
            }
        ],
    )
    return spec


def _main_container(
    settings: RmdSettings,
    *,
    taskmanager: TaskManagerPodOptions,
    jobmanager: JobManagerPodOptions,
    source: JsonDict,
    conf_dir: str,
    application: ApplicationProgram | None,
) -> JsonDict:
    source = copy.deepcopy(source)
    template_image = source.get("image")
    image = (
        template_image if template_image and not taskmanager.image_explicit else taskmanager.image
    )
    container: JsonDict = {
        "name": MAIN_CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": taskmanager.image_pull_policy,
        "command": [jobmanager.entry_path],
        "args": [LABEL_COMPONENT_JOBMANAGER, *jobmanager.entrypoint_args]
        if application is None
        else application.entrypoint_args(jobmanager.entrypoint_args),
        "ports": merge_named(
            source.get("ports") or [],
            [
                {"name": REST_PORT_NAME, "containerPort": jobmanager.rest_port},
                {"name": RPC_PORT_NAME, "containerPort": jobmanager.rpc_port},
                {"name": BLOB_PORT_NAME, "containerPort": jobmanager.blob_port},
                {"name": DAEMON_PORT_NAME, "containerPort": settings.rest_port},
            ],
        ),
        "env": merge_named(
            source.get("env") or [],
            [{"name": name, "value": value} for name, value in jobmanager.env],
            [
                _field_env(POD_IP_VARIABLE, "status.podIP"),
                _field_env(agent_env.POD_NAME, "metadata.name"),
                _field_env(agent_env.POD_NAMESPACE, "metadata.namespace"),
                {"name": agent_env.FLINK_CONF_DIR, "value": conf_dir},
            ],
        ),
        "resources": {
            "requests": {
                "cpu": cpu_quantity(jobmanager.cpu),
                "memory": memory_quantity(jobmanager.memory_mib),
            },
            "limits": {
                "cpu": cpu_quantity(jobmanager.cpu * jobmanager.cpu_limit_factor),
                "memory": memory_quantity(jobmanager.memory_mib, jobmanager.memory_limit_factor),
            },
        },
        "volumeMounts": merge_named(
            [m for m in source.get("volumeMounts") or [] if m.get("mountPath") != conf_dir],
            [{"name": FLINK_CONFIG_VOLUME, "mountPath": conf_dir}],
        ),
    }
    defined = set(container) | {"args"}
    for name, value in source.items():
        if name not in defined:
            container[name] = value
    container.setdefault("readinessProbe", copy.deepcopy(READINESS_PROBE))  # unless templated
    return container


def _field_env(name: str, field_path: str) -> JsonDict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}
