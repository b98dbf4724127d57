"""May this identity do that? SelfSubjectAccessReview, asked before acting.

One review per :class:`Permission` (verb, API group, resource; in a namespace or cluster-wide).
Used by ``rmd session`` for the user who runs it (:mod:`rmd.session.access`) and by the daemon
for its service account (:mod:`rmd.kube.permissions`). :func:`grant_command` is the
``kubectl create role`` / ``rolebinding`` pair that grants one permission, for the one-line
messages both print.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from kubernetes_asyncio import client

from rmd.kube.retry import call_with_retries
from rmd.retry import RetryPolicy


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""  # "" is the core API group
    namespaced: bool = True  # False: a cluster-wide permission (nodes, namespaces, ...)

    @property
    def qualified_resource(self) -> str:
        """``resource.group`` as kubectl's ``--resource`` takes it: ``deployments.apps``."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


async def is_allowed(
    api: client.ApiClient,
    permission: Permission,
    *,
    namespace: str,
    timeout: float,
    retry: RetryPolicy | None = None,
) -> bool:
    """The API server's answer for ``permission`` (in ``namespace`` unless cluster-wide).

    ``retry``: transient failures (no connection, timeouts, 429, 5xx) are retried under this
    policy; without it, one attempt. Errors that remain are raised: no answer is no denial.
    """
    authz = client.AuthorizationV1Api(api)
    attributes: dict[str, str] = {
        "verb": permission.verb,
        "group": permission.group,
        "resource": permission.resource,
    }
    if permission.namespaced:
        attributes["namespace"] = namespace
    body: Any = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }

    async def ask() -> Any:
        return await authz.create_self_subject_access_review(
            cast(client.V1SelfSubjectAccessReview, body), _request_timeout=timeout
        )

    if retry is None:
        review = await ask()
    else:
        what = f"review {permission.verb} {permission.qualified_resource}"
        review = await call_with_retries(ask, policy=retry, what=what)
    return bool(review.status.allowed)


async def denied_permissions(
    api: client.ApiClient,
    permissions: Iterable[Permission],
    *,
    namespace: str,
    timeout: float,
    max_parallel: int,
    retry: RetryPolicy | None = None,
) -> list[Permission]:
    """Those of ``permissions`` the caller lacks, in their order. The reviews run
    concurrently, at most ``max_parallel`` at a time (the caller's request limit); the first
    error that remains is raised once all have ended."""
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, not {max_parallel}")
    wanted = list(permissions)
    gate = asyncio.Semaphore(max_parallel)

    async def ask(permission: Permission) -> bool:
        async with gate:
            return await is_allowed(
                api, permission, namespace=namespace, timeout=timeout, retry=retry
            )

    answers = await asyncio.gather(*(ask(p) for p in wanted), return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return [permission for permission, allowed in zip(wanted, answers, strict=True) if not allowed]


async def first_denied(
    api: client.ApiClient,
    permissions: Iterable[Permission],
    *,
    namespace: str,
    timeout: float,
    max_parallel: int = 4,
) -> Permission | None:
    """The first of ``permissions`` the caller lacks in ``namespace``, or None."""
    denied = await denied_permissions(
        api, permissions, namespace=namespace, timeout=timeout, max_parallel=max_parallel
    )
    return denied[0] if denied else None


def grant_command(permission: Permission, *, namespace: str, role: str, subject: str) -> str:
    """``kubectl create role ... && kubectl create rolebinding ...`` granting ``permission``
    to ``subject`` (``--user=NAME`` or ``--serviceaccount=NAMESPACE:NAME``)."""
    if not permission.namespaced:
        return (
            f"kubectl create clusterrole {role} --verb={permission.verb} "
            f"--resource={permission.qualified_resource} && kubectl create clusterrolebinding "
            f"{role} --clusterrole={role} {subject}"
        )
    return (
        f"kubectl -n {namespace} create role {role} --verb={permission.verb} "
        f"--resource={permission.qualified_resource} && kubectl -n {namespace} create "
        f"rolebinding {role} --role={role} {subject}"
    )


def service_account_of(token: str | None) -> tuple[str, str] | None:
    """(namespace, name) of the service account a bearer token belongs to, read from the
    token's ``sub`` claim (``system:serviceaccount:<namespace>:<name>``); None for any other
    token. Only read to name the subject in a message: nothing is verified here."""
    if not token:
        return None
    parts = token.removeprefix("Bearer ").strip().split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str):
        return None
    prefix, _, rest = subject.partition("system:serviceaccount:")
    namespace, _, name = rest.partition(":")
    if prefix or not namespace or not name:
        return None
    return namespace, name
