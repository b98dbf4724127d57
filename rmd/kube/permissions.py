"""What the daemon may need to do in the cluster, in one table, and the start-up check of it.

:data:`DAEMON_NEEDS` lists every permission the daemon uses: verb, API group, resource,
namespaced or cluster-wide, why, and — where it depends on the configuration — when.
``conf/kubernetes/rbac.yaml`` grants exactly these (a unit test holds the two together both
ways). A new Kubernetes call in the daemon means a new row here and a rule there.

At start-up, before it acts, the daemon asks the API server about each permission its
configuration needs (SelfSubjectAccessReview, :mod:`rmd.kube.access`). A refusal stops it:
:class:`MissingPermission` carries one line naming the verb, the resource, what it is for and
the fix (a ``kubectl create role`` / ``rolebinding`` pair, and the rule of rbac.yaml). An API
server that cannot be reached is no refusal: each review is retried like any call (backoff
with jitter, up to 30 s); if there is still no answer the daemon starts unchecked, as before
the check existed — its pod watch and creates ride out the outage with their own retries —
and says so in a warning (``permissions_unchecked``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.config.settings import RmdSettings
from rmd.kube.access import Permission, denied_permissions, grant_command, service_account_of
from rmd.kube.retry import KUBE_CALL_RETRY, api_error_message, status_of
from rmd.retry import RetryPolicy

log = structlog.get_logger(__name__)

RBAC_FILE = "conf/kubernetes/rbac.yaml"


def always(settings: RmdSettings) -> bool:
    return True


def elects_a_leader(settings: RmdSettings) -> bool:
    """Standby daemons (high availability): the leader election Lease."""
    return settings.leader_election


_WITH_HA = "high-availability.type: KUBERNETES"


def removes_itself(settings: RmdSettings) -> bool:
    """An application cluster that deletes its own Deployment when the application ends."""
    return settings.application_mode and settings.shutdown_on_application_finish


_APPLICATION = "execution.target: kubernetes-application"


@dataclass(frozen=True, kw_only=True)
class Need:
    """One permission the daemon uses, why, and for which configurations."""

    permission: Permission
    why: str
    when: Callable[[RmdSettings], bool] = always
    when_text: str = ""  # the configuration that needs it, in words ("" = always)


def _need(
    verb: str,
    resource: str,
    *,
    group: str = "",
    why: str,
    when: Callable[[RmdSettings], bool] = always,
    when_text: str = "",
) -> Need:
    return Need(
        permission=Permission(verb, resource, group), why=why, when=when, when_text=when_text
    )


DAEMON_NEEDS: tuple[Need, ...] = (
    _need("create", "pods", why="TaskManager pods"),
    _need("delete", "pods", why="releasing idle, timed-out and orphaned TaskManager pods"),
    _need("get", "pods", why="telling whether a 409 on create is its own pod"),
    _need("list", "pods", why="the pod watch's full list (start-up, resync, after a 410)"),
    _need("watch", "pods", why="the one pod watch"),
    _need("patch", "pods", why="the rmd.dev/state label (kubectl get pods -L rmd.dev/state)"),
    _need(
        "get",
        "deployments",
        group="apps",
        why="the JobManager Deployment <cluster-id>, owner of every TaskManager pod",
    ),
    _need(
        "delete",
        "deployments",
        group="apps",
        why="an application cluster removing itself once its application has ended",
        when=removes_itself,
        when_text=_APPLICATION,
    ),
    _need(
        "get",
        "configmaps",
        why="reading rmd-state-<cluster-id> (demand and assignments kept across restarts) "
        "and publishing flink-config-<cluster-id>",
    ),
    _need(
        "create",
        "configmaps",
        why="creating rmd-state-<cluster-id> and flink-config-<cluster-id>",
    ),
    _need(
        "update",
        "configmaps",
        why="rewriting rmd-state-<cluster-id> as demand changes, flink-config-<cluster-id> "
        "over an older one",
    ),
    _need("create", "events", why="Kubernetes Events on TaskManager pods and the Deployment"),
    _need("patch", "events", why="counting a repeated Event (aggregation) instead of a new one"),
    *(
        _need(
            verb,
            "leases",
            group="coordination.k8s.io",
            why=f"{what} the leader election Lease <cluster-id>-rmd-leader",
            when=elects_a_leader,
            when_text=_WITH_HA,
        )
        for verb, what in (("get", "reading"), ("create", "creating"), ("update", "renewing"))
    ),
)


def needs_for(settings: RmdSettings, needs: Sequence[Need] = DAEMON_NEEDS) -> tuple[Need, ...]:
    """The rows this configuration needs, in table order."""
    return tuple(need for need in needs if need.when(settings))


class MissingPermission(RuntimeError):
    """The daemon lacks a permission it needs; the message is one line with the fix."""


def rbac_rule_text(permission: Permission) -> str:
    return (
        f'apiGroups: ["{permission.group}"], resources: ["{permission.resource}"], '
        f'verbs: ["{permission.verb}"]'
    )


def missing_message(
    missing: Sequence[Need], *, namespace: str, service_account: tuple[str, str] | None
) -> str:
    """One line: the first missing permission, what it is for, how to grant it; the others
    named after it."""
    first = missing[0].permission
    subject = (
        f"--serviceaccount={service_account[0]}:{service_account[1]}"
        if service_account is not None
        else "--serviceaccount=<namespace>:<the daemon's service account>"
    )
    who = (
        f"service account {service_account[0]}/{service_account[1]}"
        if service_account is not None
        else "the daemon's identity"
    )
    where = f"in namespace {namespace}" if first.namespaced else "cluster-wide"
    role = f"rmd-{first.verb}-{first.resource}"
    others = [f"{n.permission.verb} {n.permission.qualified_resource}" for n in missing[1:]]
    also = f" (also missing: {', '.join(others)})" if others else ""
    return (
        f"missing permission: {who} may not {first.verb} {first.qualified_resource} {where}, "
        f"needed for {missing[0].why}{also}; grant it: "
        f"{grant_command(first, namespace=namespace, role=role, subject=subject)}, or apply "
        f"{RBAC_FILE} (its Role has the rule {rbac_rule_text(first)})"
    )


async def check_daemon_permissions(
    api: client.ApiClient,
    needs: Iterable[Need],
    *,
    namespace: str,
    timeout: float,
    max_parallel: int,
    retry: RetryPolicy = KUBE_CALL_RETRY,
) -> bool:
    """Ask about every need (at most ``max_parallel`` reviews at a time); True when all are
    granted, False when the API server gave no answer (logged; the caller starts anyway).
    Raises :class:`MissingPermission`."""
    wanted = list(needs)
    by_permission = {need.permission: need for need in wanted}
    try:
        denied = await denied_permissions(
            api,
            [need.permission for need in wanted],
            namespace=namespace,
            timeout=timeout,
            max_parallel=max_parallel,
            retry=retry,
        )
    except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as error:
        log.warning(
            "permissions_unchecked",
            status=status_of(error),
            reason=api_error_message(error) or type(error).__name__,
            consequence="starting without the permission check; a missing permission shows "
            'as failing calls (rmd_kubernetes_api_errors_total{code="403"})',
        )
        return False
    if denied:
        token = api.configuration.api_key.get("BearerToken")
        raise MissingPermission(
            missing_message(
                [by_permission[permission] for permission in denied],
                namespace=namespace,
                service_account=service_account_of(token),
            )
        )
    log.info("permissions_checked", permissions=len(wanted), namespace=namespace)
    return True
