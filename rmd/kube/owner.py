"""The JobManager Deployment that owns every TaskManager pod (for garbage collection).

:func:`delete_owner` removes the whole cluster: an application cluster does so when its
application has ended (Flink's native application mode: the resource manager's
``deregisterApplication`` deletes the Deployment).
"""

from __future__ import annotations

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.kube.podspec import OwnerReference
from rmd.kube.retry import KUBE_CALL_RETRY, api_error_message, call_with_retries
from rmd.retry import RetryPolicy

log = structlog.get_logger(__name__)

__all__ = ["OwnerReference", "delete_owner", "find_owner_reference", "owner_exists"]


async def find_owner_reference(
    api: client.ApiClient,
    *,
    namespace: str,
    deployment: str,
    timeout: float,
    retry: RetryPolicy = KUBE_CALL_RETRY,
) -> OwnerReference | None:
    """The apps/v1 Deployment ``deployment`` as an owner, or None if it does not exist.

    Transient errors are retried; other errors (403: grant ``get`` on deployments) raise.
    """
    apps = client.AppsV1Api(api)

    async def read() -> client.V1Deployment:
        return await apps.read_namespaced_deployment(
            deployment, namespace, _request_timeout=timeout
        )

    try:
        found = await call_with_retries(
            read, policy=retry, what=f"read deployment {namespace}/{deployment}"
        )
    except ApiException as exc:
        if exc.status == 404:
            log.warning(
                "owner_deployment_missing",
                namespace=namespace,
                deployment=deployment,
                message=api_error_message(exc),
                consequence="TaskManager pods get no owner reference and are not "
                "garbage-collected with the JobManager",
            )
            return None
        raise
    return OwnerReference(
        api_version="apps/v1",
        kind="Deployment",
        name=str(found.metadata.name),
        uid=str(found.metadata.uid),
    )


async def owner_exists(
    api: client.ApiClient, *, namespace: str, owner: OwnerReference, timeout: float
) -> bool:
    """False once the Deployment ``owner`` names is gone (404, or recreated with another uid):
    pods created with this owner reference would be garbage-collected at once. Any other
    answer (an error included) counts as still there: only a sure answer stops creates."""
    apps = client.AppsV1Api(api)
    try:
        found = await apps.read_namespaced_deployment(
            owner.name, namespace, _request_timeout=timeout
        )
    except ApiException as exc:
        return exc.status != 404
    except Exception:  # no answer: unknown, so the owner counts as present
        return True
    return str(found.metadata.uid) == owner.uid


async def delete_owner(
    api: client.ApiClient,
    *,
    namespace: str,
    owner: OwnerReference,
    timeout: float,
    retry: RetryPolicy = KUBE_CALL_RETRY,
) -> bool:
    """Delete the Deployment ``owner`` names, with foreground propagation (the garbage
    collector removes its ReplicaSet, pods, Services and ConfigMap, then the Deployment) and
    its uid as precondition (a Deployment re-created under the same name is not touched).

    True when deleted (or being deleted), False when it was gone or is another one by now.
    Transient errors are retried; others raise (403: grant ``delete`` on deployments).
    """
    apps = client.AppsV1Api(api)
    body = client.V1DeleteOptions(
        propagation_policy="Foreground", preconditions=client.V1Preconditions(uid=owner.uid)
    )

    async def delete() -> object:
        return await apps.delete_namespaced_deployment(
            owner.name, namespace, body=body, _request_timeout=timeout
        )

    try:
        await call_with_retries(
            delete, policy=retry, what=f"delete deployment {namespace}/{owner.name}"
        )
    except ApiException as exc:
        if exc.status in (404, 409):  # gone, or the uid precondition failed: not ours
            return False
        raise
    return True
