"""What the daemon of an application cluster does when its application has ended.

The follower (:mod:`rmd.flink.follower`) calls :class:`ApplicationClusterEnd` once, with
how the application ended. Unless ``execution.shutdown-on-application-finish`` is false, it
deletes the daemon's own Deployment (:func:`rmd.kube.owner.delete_owner`, as Flink's native
application mode does in ``deregisterApplication``): the garbage collector then removes the
ReplicaSet, the JobManager pod (this daemon included: it gets SIGTERM), the TaskManager pods,
the Services and the ConfigMap. Either way the decision is logged once as
``application_finished``.
"""

from __future__ import annotations

import asyncio

import structlog
from kubernetes_asyncio import client

from rmd.config.settings import RmdSettings
from rmd.flink.application import ApplicationEnd
from rmd.kube.owner import delete_owner
from rmd.kube.podspec import OwnerReference
from rmd.kube.retry import explain_api_error

__all__ = ["ApplicationClusterEnd"]

log = structlog.get_logger("rmd.application")


class ApplicationClusterEnd:
    """The follower's ``on_application_end``: removes the cluster, or says why not."""

    def __init__(
        self, api: client.ApiClient, settings: RmdSettings, *, owner: OwnerReference | None
    ) -> None:
        self._api = api
        self._settings = settings
        self._owner = owner
        self._tasks: list[asyncio.Task[None]] = []

    def __call__(self, end: ApplicationEnd) -> None:
        if not self._settings.shutdown_on_application_finish:
            self._log(
                end,
                cluster="stays (execution.shutdown-on-application-finish: false)",
                fix=f"remove it with: {self._stop_command()}",
            )
            return
        self._tasks.append(asyncio.create_task(self._remove(end), name="remove-cluster"))

    async def close(self) -> None:
        """Cancel a removal still under way (the daemon is stopping)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _remove(self, end: ApplicationEnd) -> None:
        settings = self._settings
        deployment = f"{settings.namespace}/{settings.cluster_id}"
        if self._owner is None:
            self._log(
                end,
                error=True,
                cluster=f"not removed: there is no Deployment {deployment} to delete",
            )
            return
        try:
            deleted = await delete_owner(
                self._api,
                namespace=settings.namespace,
                owner=self._owner,
                timeout=settings.api_request_timeout,
            )
        except Exception as exc:
            self._log(
                end,
                error=True,
                cluster=f"not removed: deleting deployment {deployment} failed ({exc})",
                fix=f"{explain_api_error(exc)}: the daemon needs 'delete' on deployments.apps "
                f"(conf/kubernetes/rbac.yaml); or remove it with: {self._stop_command()}",
            )
            return
        self._log(
            end,
            cluster=f"removing: deployment {deployment} deleted (foreground), the garbage "
            "collector removes its pods, Services and ConfigMap"
            if deleted
            else f"deployment {deployment} was already gone",
        )

    def _stop_command(self) -> str:
        return (
            f"rmd session stop -D kubernetes.cluster-id={self._settings.cluster_id} "
            f"-D kubernetes.namespace={self._settings.namespace}"
        )

    @staticmethod
    def _log(end: ApplicationEnd, *, error: bool = False, **fields: str) -> None:
        emit = log.error if error else log.info
        emit("application_finished", state=end.state, parts=end.describe(), **fields)
