"""Does the caller may do what ``rmd session`` needs? SelfSubjectAccessReview, before acting.

:func:`first_denied` asks the API server about each permission in turn and returns the first
one refused (or None); :func:`denial_message` is the one line naming verb, resource and the
``kubectl create role`` fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from kubernetes_asyncio import client


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""  # "" is the core API group

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource


START_PERMISSIONS = (
    Permission("get", "deployments", "apps"),
    Permission("create", "deployments", "apps"),
    Permission("delete", "deployments", "apps"),  # to leave nothing behind on failure
    Permission("create", "services"),
    Permission("create", "configmaps"),
    Permission("list", "pods"),
)
STOP_PERMISSIONS = (
    Permission("get", "deployments", "apps"),
    Permission("delete", "deployments", "apps"),
    Permission("list", "pods"),
)
LIST_PERMISSIONS = (Permission("list", "deployments", "apps"), Permission("list", "pods"))


async def first_denied(
    api: client.ApiClient,
    permissions: tuple[Permission, ...],
    *,
    namespace: str,
    timeout: float,
) -> Permission | None:
    """The first of ``permissions`` the caller lacks in ``namespace``, or None."""
    authz = client.AuthorizationV1Api(api)
    for permission in permissions:
        body: Any = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": permission.verb,
                    "group": permission.group,
                    "resource": permission.resource,
                }
            },
        }
        review = await authz.create_self_subject_access_review(
            cast(client.V1SelfSubjectAccessReview, body), _request_timeout=timeout
        )
        if not review.status.allowed:
            return permission
    return None


def denial_message(permission: Permission, *, namespace: str) -> str:
    """One line: what is missing and the kubectl commands that grant it."""
    return (
        f"you may not {permission.verb} {permission.qualified_resource} in namespace "
        f"{namespace}; ask an admin to run: kubectl -n {namespace} create role rmd-session "
        f"--verb={permission.verb} --resource={permission.qualified_resource} && kubectl -n "
        f"{namespace} create rolebinding rmd-session --role=rmd-session --user=<you>"
    )
