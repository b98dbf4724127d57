"""Leader election through the ``coordination.k8s.io/v1`` Lease ``<cluster-id>-rmd-leader``:
the I/O loop around the pure :class:`rmd.core.leadership.Election`.

Every retry period the loop reads the Lease (the leader renews straight from the object
its last write returned: one call per period) and does what the election says: create it,
acquire it, renew it, or wait. Writes carry the resourceVersion read (a 409 means another
candidate won the race: read again). The Lease is read and written as raw JSON, with
``acquireTime``/``renewTime`` formatted here as MicroTime (``2026-12-01T00:00:00.000000Z``,
always six fractional digits: kubernetes_asyncio's ``datetime.isoformat()`` drops them at
a whole second, and the API server rejects that). The leader's HTTP address goes in the
annotation :data:`LEADER_URL_ANNOTATION`, so followers can send clients to it.

A leader that finds another holder, or cannot renew within its write window, raises
:class:`LeadershipLost` out of :meth:`LeaderElector.run`: the daemon stops and exits, and
its Deployment restarts it as a follower (as client-go's users do). On a graceful stop the
leader hands the Lease back (:meth:`LeaderElector.release`), so a follower takes over at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from rmd.core.clock import Clock
from rmd.core.leadership import Election, Intent, LeaseRecord
from rmd.kube.flinkconfigmap import POD_IP_VARIABLE
from rmd.kube.listwatch import Json, call_json
from rmd.kube.podspec import OwnerReference
from rmd.kube.retry import api_error_message, status_of

__all__ = [
    "LEADER_URL_ANNOTATION",
    "LeaderElector",
    "LeadershipLost",
    "advertised_url",
    "candidate_identity",
    "field_manager_name",
    "lease_name",
    "micro_time",
    "record_of",
]

log = structlog.get_logger("rmd.leader")

LEASE_NAME_SUFFIX = "-rmd-leader"  # Flink's own HA ConfigMaps end in "-config-map"
LEADER_URL_ANNOTATION = "rmd.apache.org/leader-url"
# Followers wait up to this much longer than asked, so candidates do not move in step.
FOLLOWER_JITTER = 0.2


class LeadershipLost(Exception):
    """This daemon was the leader and is no more: it must stop creating and deleting pods."""


def lease_name(cluster_id: str) -> str:
    return f"{cluster_id}{LEASE_NAME_SUFFIX}"


def candidate_identity(environ: Mapping[str, str] = os.environ) -> str:
    """client-go's choice: the pod name (``HOSTNAME`` in a pod) + ``_`` + a unique suffix, so
    a restarted container never mistakes its predecessor's Lease for its own."""
    host = environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:12]}"


FIELD_MANAGER_PREFIX = "rmd/"
FIELD_MANAGER_MAX_LENGTH = 128  # the API server refuses a longer fieldManager


def field_manager_name(identity: str) -> str:
    """The ``fieldManager`` of this daemon's writes: ``rmd/`` + its identity (the Lease's
    holder identity with high availability), so ``metadata.managedFields[].manager`` of a pod
    or the state ConfigMap names the replica that wrote it. Cut to the API server's 128
    characters, keeping the identity's unique end."""
    name = FIELD_MANAGER_PREFIX + identity
    if len(name) <= FIELD_MANAGER_MAX_LENGTH:
        return name
    return (
        FIELD_MANAGER_PREFIX + identity[-(FIELD_MANAGER_MAX_LENGTH - len(FIELD_MANAGER_PREFIX)) :]
    )


def advertised_url(*, rest_address: str, port: int, environ: Mapping[str, str] = os.environ) -> str:
    """Where this daemon's HTTP API answers for the others: the pod IP (``_POD_IP_ADDRESS``,
    as Flink's JobManager pod sets it), else the address it binds unless that is a wildcard,
    else the host name."""
    host = environ.get(POD_IP_VARIABLE) or (
        rest_address if rest_address not in ("", "0.0.0.0", "::") else socket.gethostname()
    )
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{port}"


def micro_time(wall: float) -> str:
    """A wall-clock time as Kubernetes' MicroTime: RFC 3339, six fractional digits, UTC."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_of(lease: Mapping[str, Any]) -> LeaseRecord:
    """The election's view of a Lease object (raw JSON)."""
    metadata = _mapping(lease.get("metadata"))
    spec = _mapping(lease.get("spec"))
    url = _mapping(metadata.get("annotations")).get(LEADER_URL_ANNOTATION)
    duration = spec.get("leaseDurationSeconds")
    transitions = spec.get("leaseTransitions")
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        lease_duration=float(duration) if isinstance(duration, int | float) else 0.0,
        transitions=int(transitions) if isinstance(transitions, int) else 0,
        leader_url=url if isinstance(url, str) and url else None,
        version=str(metadata.get("resourceVersion") or ""),
    )


class LeaderElector:
    """Runs one candidate's side of the election against the API server."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        election: Election,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        owner: OwnerReference | None,
        clock: Clock,
        request_timeout: float,
        on_leading: Callable[[bool], None],
        uniform: Callable[[], float] = random.random,
    ) -> None:
        """``on_leading(True)`` when this daemon becomes the leader, ``on_leading(False)``
        when it stops being it."""
        self._api = api
        self._election = election
        self._namespace = namespace
        self._name = name
        self._labels = dict(labels)
        self._owner = owner
        self._clock = clock
        # Never longer than a retry period: a slow call must not eat the renew deadline.
        timings = election.timings
        seconds = min(request_timeout, max(1.0, timings.retry_period))
        self._timeout = (seconds, seconds)
        self._on_leading = on_leading
        self._uniform = uniform
        self._lease: Json | None = None  # the Lease as last read or written
        self._known_holder: str | None = None

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self._namespace}/leases"

    def set_url(self, url: str) -> None:
        """This daemon's own HTTP address, written into the Lease while it leads."""
        self._election.url = url

    def may_write(self) -> bool:
        """The cheap local check the pod gateway makes before every create and delete."""
        return self._election.may_write()

    @property
    def is_leader(self) -> bool:
        return self._election.may_write()

    @property
    def leader_url(self) -> str | None:
        return self._election.leader_url()

    async def run(self) -> NoReturn:
        """Take part in the election until leadership is lost (:class:`LeadershipLost`)."""
        log.info(
            "leader_election_started",
            lease=f"{self._namespace}/{self._name}",
            identity=self._election.identity,
            url=self._election.url,
            lease_duration=self._election.timings.lease_duration,
            renew_deadline=self._election.timings.renew_deadline,
            retry_period=self._election.timings.retry_period,
        )
        while True:
            await self._step()
            if self._election.must_step_down():
                self._on_leading(False)
                log.error(
                    "leadership_lost",
                    identity=self._election.identity,
                    reason="another holder"
                    if self._election.deposed
                    else "no renewal within the write window",
                    consequence="no pod is created or deleted any more; the daemon exits "
                    "so that it restarts as a follower",
                )
                raise LeadershipLost(f"lost the leader Lease {self._namespace}/{self._name}")
            wait = self._election.seconds_to_next_step()
            if not self._election.leading:
                wait *= 1 + FOLLOWER_JITTER * self._uniform()
            await asyncio.sleep(wait)

    async def release(self) -> None:
        """Hand the Lease back on a graceful stop (best effort, one try)."""
        record = self._election.release_record()
        if record is None or self._lease is None:
            return
        try:
            await self._write(record, self._lease, acquired=True)
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning(
                "lease_release_failed", status=status_of(exc), message=api_error_message(exc)
            )
            return
        log.info("lease_released", lease=f"{self._namespace}/{self._name}")

    # ------------------------------------------------------------------ one step
    async def _step(self) -> None:
        election = self._election
        if not (election.leading and self._lease is not None) and not await self._read():
            return
        step = election.next_step()
        self._note_holder()
        if step.intent is Intent.WAIT or step.record is None:
            return
        sent_at = self._clock.monotonic()
        try:
            written = await self._write(
                step.record, self._lease, acquired=step.intent is not Intent.RENEW
            )
        except ApiException as exc:
            self._lease = None  # read again before the next try
            if exc.status == 409:
                log.info("lease_write_lost_race", intent=str(step.intent))
            else:
                log.warning(
                    "lease_write_failed",
                    intent=str(step.intent),
                    status=exc.status,
                    message=api_error_message(exc),
                )
            return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._lease = None
            log.warning(
                "lease_write_failed", intent=str(step.intent), message=api_error_message(exc)
            )
            return
        self._lease = written
        record = record_of(written)
        if election.written(record, sent_at=sent_at):
            self._known_holder = election.identity
            log.info(
                "leader_elected",
                identity=election.identity,
                url=election.url,
                transitions=record.transitions,
                took_over=step.intent is Intent.ACQUIRE,
            )
            self._on_leading(True)

    async def _read(self) -> bool:
        """Read the Lease into the election; False when it could not be read."""
        try:
            lease: Json | None = await call_json(
                self._api, "GET", f"{self.path}/{self._name}", timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("lease_read_failed", status=exc.status, message=api_error_message(exc))
                return False
            lease = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("lease_read_failed", message=api_error_message(exc))
            return False
        self._lease = lease
        self._election.observe(None if lease is None else record_of(lease))
        return True

    async def _write(self, record: LeaseRecord, current: Json | None, *, acquired: bool) -> Json:
        now = micro_time(self._clock.wall())
        if current is None:
            lease = self._new_lease()
            method, path = "POST", self.path
        else:
            lease = {**current, "metadata": dict(_mapping(current.get("metadata")))}
            method, path = "PUT", f"{self.path}/{self._name}"
        metadata = lease["metadata"]
        metadata["resourceVersion"] = record.version or None
        annotations = dict(_mapping(metadata.get("annotations")))
        if record.leader_url:
            annotations[LEADER_URL_ANNOTATION] = record.leader_url
        else:
            annotations.pop(LEADER_URL_ANNOTATION, None)
        metadata["annotations"] = annotations
        spec = dict(_mapping(lease.get("spec")))
        spec.update(
            holderIdentity=record.holder,
            leaseDurationSeconds=max(1, round(record.lease_duration)),
            leaseTransitions=record.transitions,
            renewTime=now,
        )
        if acquired or not spec.get("acquireTime"):
            spec["acquireTime"] = now
        lease["spec"] = spec
        if metadata["resourceVersion"] is None:
            del metadata["resourceVersion"]
        return await call_json(self._api, method, path, body=lease, timeout=self._timeout)

    def _new_lease(self) -> Json:
        metadata: Json = {"name": self._name, "namespace": self._namespace, "labels": self._labels}
        if self._owner is not None:
            metadata["ownerReferences"] = [self._owner.to_manifest()]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata}

    def _note_holder(self) -> None:
        """Log once whenever the holder this daemon sees changes (as a follower)."""
        lease = self._lease
        holder = None if lease is None else record_of(lease).holder or None
        if holder == self._known_holder or holder == self._election.identity:
            return
        self._known_holder = holder
        log.info("following", leader=holder, leader_url=self._election.leader_url())


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
