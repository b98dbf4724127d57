"""May the caller do what ``rmd session`` needs? SelfSubjectAccessReview, before acting.

What each command needs; :func:`first_denied` (:mod:`rmd.kube.access`) asks the API server
about each permission in turn and returns the first one refused (or None);
:func:`denial_message` is the one line naming verb, resource and the ``kubectl create role``
fix.
"""

from __future__ import annotations

from rmd.kube.access import Permission, first_denied, grant_command

__all__ = [
    "LIST_PERMISSIONS",
    "START_PERMISSIONS",
    "STOP_PERMISSIONS",
    "Permission",
    "denial_message",
    "first_denied",
]

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


def denial_message(permission: Permission, *, namespace: str) -> str:
    """One line: what is missing and the kubectl commands that grant it."""
    grant = grant_command(
        permission, namespace=namespace, role="rmd-session", subject="--user=<you>"
    )
    return (
        f"you may not {permission.verb} {permission.qualified_resource} in namespace "
        f"{namespace}; ask an admin to run: {grant}"
    )
