"""The JobManager Deployment that owns every TaskManager pod (for garbage collection)."""

from __future__ import annotations

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.kube.podspec import OwnerReference
from rmd.kube.retry import KUBE_CALL_RETRY, api_error_message, call_with_retries
from rmd.retry import RetryPolicy

log = structlog.get_logger(__name__)

__all__ = ["OwnerReference", "find_owner_reference", "owner_exists"]


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
