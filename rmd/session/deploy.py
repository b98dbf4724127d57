"""Creating, waiting for, listing and removing session clusters through the Kubernetes API.

Every failure is a :class:`SessionError` whose message is one line saying what to do.
:func:`start_cluster` creates the Deployment first and everything else owned by it; when a
later create fails it deletes the Deployment again (the garbage collector removes whatever
was already owned by it), so nothing half-created stays behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.config import agent_env
from rmd.kube.podspec import (
    LABEL_APP,
    OwnerReference,
    selector_string,
    taskmanager_selector_labels,
)
from rmd.kube.retry import api_error_message
from rmd.session.manifests import (
    LABEL_COMPONENT_JOBMANAGER,
    SessionPlan,
    cluster_labels,
    jobmanager_labels,
    rest_service_name,
)

POLL_INTERVAL = 0.5
Say = Callable[[str], None]


class SessionError(Exception):
    """A failure to report: one line for the user."""


def unreachable(error: BaseException, *, host: str) -> SessionError:
    reason = str(error) or type(error).__name__
    return SessionError(
        f"cannot reach the Kubernetes API server at {host} ({reason}); check that the cluster "
        "is up and the kubeconfig (--kubeconfig, $KUBECONFIG) points at it"
    )


def api_failure(what: str, error: ApiException) -> SessionError:
    fix = (
        "grant it to your user (see `kubectl auth can-i`)"
        if error.status == 403
        else "check the API server"
    )
    return SessionError(f"cannot {what} (HTTP {error.status}: {api_error_message(error)}); {fix}")


API_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


# ---------------------------------------------------------------------------- start


@dataclass(frozen=True)
class Started:
    pod_name: str
    pod_ip: str | None
    elapsed: float


async def start_cluster(
    api: client.ApiClient,
    plan: SessionPlan,
    *,
    say: Say,
    timeout: float,
    request_timeout: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> Started:
    """Create the cluster and wait until the JobManager is ready."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    name, namespace = plan.cluster_id, plan.namespace
    begin = monotonic()
    exists = await _read_deployment(apps, name=name, namespace=namespace, timeout=request_timeout)
    if exists is not None:
        raise _exists(name, namespace)
    try:
        created = await apps.create_namespaced_deployment(
            namespace,
            body=cast(client.V1Deployment, plan.deployment),
            _request_timeout=request_timeout,
        )
    except ApiException as error:
        if error.status == 409:
            raise _exists(name, namespace) from None
        raise api_failure(f"create deployment {namespace}/{name}", error) from None
    owner = OwnerReference(
        api_version="apps/v1", kind="Deployment", name=name, uid=created.metadata.uid
    )
    say(f"created deployment {name} (the JobManager)")
    try:
        for kind, manifest in plan.owned(owner):
            what = f"{kind.lower()} {manifest['metadata']['name']}"
            try:
                if kind == "ConfigMap":
                    await core.create_namespaced_config_map(
                        namespace, body=cast(Any, manifest), _request_timeout=request_timeout
                    )
                else:
                    await core.create_namespaced_service(
                        namespace, body=cast(Any, manifest), _request_timeout=request_timeout
                    )
            except ApiException as error:
                raise api_failure(f"create {what} in {namespace}", error) from None
            say(f"created {what}")
        return await _wait_ready(
            apps,
            core,
            plan,
            say=say,
            begin=begin,
            timeout=timeout,
            monotonic=monotonic,
            request_timeout=request_timeout,
        )
    except BaseException:
        await _delete_quietly(apps, name=name, namespace=namespace, timeout=request_timeout)
        say(f"deleted deployment {name} again: nothing of the cluster is left")
        raise


def _exists(name: str, namespace: str) -> SessionError:
    return SessionError(
        f"a cluster {name} already exists in namespace {namespace}; choose another "
        f"kubernetes.cluster-id, or remove it first: rmd session stop -D "
        f"kubernetes.cluster-id={name} -D kubernetes.namespace={namespace}"
    )


async def _read_deployment(
    apps: client.AppsV1Api, *, name: str, namespace: str, timeout: float
) -> Any:
    try:
        return await apps.read_namespaced_deployment(name, namespace, _request_timeout=timeout)
    except ApiException as error:
        if error.status == 404:
            return None
        raise api_failure(f"read deployment {namespace}/{name}", error) from None


async def _delete_quietly(
    apps: client.AppsV1Api, *, name: str, namespace: str, timeout: float
) -> None:
    try:
        await asyncio.shield(
            apps.delete_namespaced_deployment(
                name,
                namespace,
                propagation_policy="Background",
                _request_timeout=timeout,
            )
        )
    except ApiException as error:
        if error.status != 404:
            raise


async def _wait_ready(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    plan: SessionPlan,
    *,
    say: Say,
    begin: float,
    timeout: float,
    monotonic: Callable[[], float],
    request_timeout: float,
) -> Started:
    """Poll the JobManager pods until ``replicas`` of them are Ready; say each new phase."""
    selector = selector_string(jobmanager_labels(plan.cluster_id))
    last = ""
    while True:
        elapsed = monotonic() - begin
        pods = await core.list_namespaced_pod(
            plan.namespace, label_selector=selector, _request_timeout=request_timeout
        )
        live = [pod for pod in pods.items if not pod.metadata.deletion_timestamp]
        ready = [pod for pod in live if _is_ready(pod)]
        phase = _phase_text(live, ready=len(ready), wanted=plan.jobmanager.replicas)
        if phase != last:
            say(f"[{elapsed:5.1f} s] {phase}")
            last = phase
        if len(ready) >= plan.jobmanager.replicas:
            pod = ready[0]
            return Started(pod_name=pod.metadata.name, pod_ip=pod.status.pod_ip, elapsed=elapsed)
        if not live:
            await _raise_replica_failure(apps, plan, timeout=request_timeout)
        failed = [pod for pod in live if pod.status.phase in ("Failed", "Succeeded")]
        if failed:
            raise SessionError(
                f"the JobManager pod {failed[0].metadata.name} ended ({failed[0].status.phase}); "
                f"see kubectl -n {plan.namespace} logs {failed[0].metadata.name}"
            )
        if elapsed > timeout:
            raise SessionError(
                f"the JobManager was not ready after {timeout:g} s ({phase}); see kubectl -n "
                f"{plan.namespace} describe pods -l {selector}, or wait longer with --timeout"
            )
        await asyncio.sleep(POLL_INTERVAL)


async def _raise_replica_failure(
    apps: client.AppsV1Api, plan: SessionPlan, *, timeout: float
) -> None:
    """The controller cannot create the JobManager pod (a missing service account, a quota):
    waiting will not help, so say why."""
    deployment = await _read_deployment(
        apps, name=plan.cluster_id, namespace=plan.namespace, timeout=timeout
    )
    conditions = (deployment.status.conditions or []) if deployment and deployment.status else []
    for condition in conditions:
        if condition.type == "ReplicaFailure" and condition.status == "True":
            raise SessionError(
                f"the JobManager pod cannot be created: {condition.message}; fix that (e.g. "
                f"the service account: kubectl -n {plan.namespace} apply -f "
                "conf/kubernetes/rbac.yaml) and start again"
            )


def _is_ready(pod: Any) -> bool:
    conditions = pod.status.conditions or [] if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _phase_text(pods: list[Any], *, ready: int, wanted: int) -> str:
    if not pods:
        return "waiting for the JobManager pod to be created"
    pod = pods[0]
    status = pod.status
    if not pod.spec.node_name:
        reason = next(
            (c.message for c in status.conditions or [] if c.type == "PodScheduled" and c.message),
            "",
        )
        return "JobManager pod Pending: not scheduled yet" + (f" ({reason})" if reason else "")
    waiting = [
        cs.state.waiting.reason
        for cs in status.container_statuses or []
        if cs.state and cs.state.waiting
    ]
    if waiting:
        return f"JobManager pod on {pod.spec.node_name}: {', '.join(waiting)}"
    if ready >= wanted:
        return f"JobManager ready ({ready}/{wanted}), pod {pod.metadata.name} at {status.pod_ip}"
    return f"JobManager pod {status.phase} on {pod.spec.node_name}, {ready}/{wanted} ready"


# ---------------------------------------------------------------------------- attach


async def stay_attached(
    api: client.ApiClient,
    plan: SessionPlan,
    *,
    detach: asyncio.Event,
    say: Say,
    request_timeout: float,
    interval: float = 2.0,
) -> bool:
    """Show the JobManager's readiness while attached; returns True when ``detach`` was set
    (the caller stops the cluster), False when the Deployment went away by other means."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    selector = selector_string(jobmanager_labels(plan.cluster_id))
    last = ""
    while not detach.is_set():
        deployment = await _read_deployment(
            apps, name=plan.cluster_id, namespace=plan.namespace, timeout=request_timeout
        )
        if deployment is None:
            why = (
                "the cluster was stopped elsewhere"
                if plan.application is None
                else "the application has ended and its cluster removed itself (or it was "
                "stopped elsewhere)"
            )
            say(f"deployment {plan.cluster_id} is gone: {why}")
            return False
        pods = await core.list_namespaced_pod(
            plan.namespace, label_selector=selector, _request_timeout=request_timeout
        )
        live = [pod for pod in pods.items if not pod.metadata.deletion_timestamp]
        ready = sum(1 for pod in live if _is_ready(pod))
        text = f"JobManager {ready}/{plan.jobmanager.replicas} ready"
        if text != last:
            say(f"{datetime.now(UTC):%H:%M:%S} {text}")
            last = text
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await detach.wait()
    return True


# ---------------------------------------------------------------------------- endpoint


async def rest_endpoint_lines(
    api: client.ApiClient, plan: SessionPlan, started: Started, *, request_timeout: float
) -> list[str]:
    """How to reach Flink's REST API for the REST Service's type."""
    core = client.CoreV1Api(api)
    name, namespace = rest_service_name(plan.cluster_id), plan.namespace
    port = plan.jobmanager.rest_port
    service = await core.read_namespaced_service(name, namespace, _request_timeout=request_timeout)
    kind = service.spec.type
    lines = [f"Flink REST service {name} ({kind}):"]
    if kind == "NodePort":
        node_port = service.spec.ports[0].node_port
        address = await _node_address(core, timeout=request_timeout)
        lines.append(f"  http://{address}:{node_port}  (any node's address, port {node_port})")
    elif kind == "LoadBalancer":
        ingress = (service.status.load_balancer.ingress or []) if service.status else []
        if ingress:
            host = ingress[0].ip or ingress[0].hostname
            lines.append(f"  http://{host}:{port}")
        else:
            lines.append(
                f"  load balancer pending; its address: kubectl -n {namespace} get service {name}"
            )
    lines.append(f"  in the cluster: http://{name}.{namespace}.svc:{port}")
    lines.append(f"  from here: kubectl -n {namespace} port-forward service/{name} {port}")
    if started.pod_ip:
        lines.append(f"  JobManager pod: http://{started.pod_ip}:{port}")
    return lines


async def _node_address(core: client.CoreV1Api, *, timeout: float) -> str:
    try:
        nodes = await core.list_node(_request_timeout=timeout)
    except ApiException:
        return "<node-address>"
    for node in nodes.items:
        for address in node.status.addresses or []:
            if address.type in ("ExternalIP", "InternalIP"):
                return str(address.address)
    return "<node-address>"


# ---------------------------------------------------------------------------- stop


async def stop_cluster(
    api: client.ApiClient,
    *,
    cluster_id: str,
    namespace: str,
    propagation: str,
    say: Say,
    timeout: float,
    request_timeout: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> float:
    """Delete the Deployment (and so everything owned by it) and wait until the cluster's
    pods and the Deployment are gone; returns the seconds it took."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    begin = monotonic()
    try:
        await apps.delete_namespaced_deployment(
            cluster_id,
            namespace,
            propagation_policy=propagation,
            _request_timeout=request_timeout,
        )
    except ApiException as error:
        if error.status == 404:
            raise SessionError(
                f"no cluster {cluster_id} in namespace {namespace}; see rmd session list "
                f"-D kubernetes.namespace={namespace}"
            ) from None
        raise api_failure(f"delete deployment {namespace}/{cluster_id}", error) from None
    say(f"deleting deployment {cluster_id} ({propagation} propagation)")
    selector = selector_string({**cluster_labels(cluster_id)})
    last = ""
    while True:
        elapsed = monotonic() - begin
        pods = await core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=request_timeout
        )
        deployment = await _read_deployment(
            apps, name=cluster_id, namespace=namespace, timeout=request_timeout
        )
        taskmanagers = sum(
            1 for pod in pods.items if pod.metadata.labels.get("component") == "taskmanager"
        )
        left = len(pods.items)
        text = (
            f"{taskmanagers} TaskManager pod(s), {left - taskmanagers} JobManager pod(s)"
            + (", the deployment" if deployment is not None else "")
            + " left"
        )
        if text != last:
            say(f"[{elapsed:5.1f} s] {text}")
            last = text
        if left == 0 and deployment is None:
            return elapsed
        if elapsed > timeout:
            raise SessionError(
                f"cluster {cluster_id} not gone after {timeout:g} s ({text}); see kubectl -n "
                f"{namespace} get pods -l {selector}"
            )
        await asyncio.sleep(POLL_INTERVAL)


# ---------------------------------------------------------------------------- list


@dataclass(frozen=True)
class ClusterRow:
    cluster_id: str
    age: str
    jobmanager_ready: str
    taskmanagers: int
    slots: int


async def list_clusters(
    api: client.ApiClient, *, namespace: str, request_timeout: float, now: datetime | None = None
) -> list[ClusterRow]:
    """The rmd clusters in ``namespace``: JobManager Deployments with Flink's labels."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    deployments = await apps.list_namespaced_deployment(
        namespace,
        label_selector=f"type=flink-native-kubernetes,component={LABEL_COMPONENT_JOBMANAGER}",
        _request_timeout=request_timeout,
    )
    selector = taskmanager_selector_labels("x")
    del selector[LABEL_APP]
    pods = await core.list_namespaced_pod(
        namespace, label_selector=selector_string(selector), _request_timeout=request_timeout
    )
    moment = now or datetime.now(UTC)
    rows = []
    for deployment in deployments.items:
        cluster_id = deployment.metadata.name
        mine = [
            pod
            for pod in pods.items
            if pod.metadata.labels.get(LABEL_APP) == cluster_id
            and not pod.metadata.deletion_timestamp
            and pod.status.phase not in ("Failed", "Succeeded")
        ]
        ready = deployment.status.ready_replicas or 0
        rows.append(
            ClusterRow(
                cluster_id=cluster_id,
                age=format_age(moment - deployment.metadata.creation_timestamp),
                jobmanager_ready=f"{ready}/{deployment.spec.replicas}",
                taskmanagers=len(mine),
                slots=sum(_slots_of(pod) for pod in mine),
            )
        )
    return sorted(rows, key=lambda row: row.cluster_id)


def _slots_of(pod: Any) -> int:
    for container in pod.spec.containers:
        for env in container.env or []:
            if env.name == agent_env.TASKMANAGER_SLOTS and env.value:
                return int(env.value)
    return 0


def format_age(age: Any) -> str:
    seconds = int(age.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
