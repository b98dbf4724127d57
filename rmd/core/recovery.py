"""What survives a restart: the jobs' declared slots and which TaskManager slots they hold.

Pure: no I/O. The API server cannot tell these from pods, so the daemon keeps them in a
ConfigMap (:mod:`rmd.kube.statestore` reads and writes it, :mod:`rmd.statewriter` decides
when). This module holds the two pure halves:

- :class:`StateSnapshot` — what is written: per job (in declaration order) its declared
  slots and the slots it holds, ``{taskmanager: [slot index, ...]}``; and its JSON form
  (:meth:`StateSnapshot.to_json` / :meth:`StateSnapshot.from_json`, which names the field
  that is wrong in a damaged document).
- :class:`Recovery` — what the allocator does with it after a restart: the slots each adopted
  TaskManager held are *reserved* for their jobs until it registers again (then they go back
  to exactly those jobs); while the recovery window is open
  (``resourcemanager.previous-worker.recovery.timeout`` from the adoption), adopted
  TaskManagers that have not registered yet count as supply, so no pod is created for demand
  they may cover, and reserved demand is not handed to other TaskManagers. It also keeps the
  figures of the recovery (adopted, deleted, re-registered) for the ``recovered`` notice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rmd.core.model import RecoveryFigures

STATE_FORMAT_VERSION = 2  # written; 1 (rmd before idle times and the compact form) is read


class StateFormatError(ValueError):
    """The stored state cannot be read; the message names the field and what was expected."""


@dataclass(frozen=True, slots=True)
class JobState:
    job_id: str
    slots: int  # the declared total requirement
    # The slots it holds: (TaskManager name, sorted slot indices), sorted by name.
    held: tuple[tuple[str, tuple[int, ...]], ...] = ()
    origin: str | None = None  # who declares it, when not the HTTP API

    @property
    def held_count(self) -> int:
        return sum(len(indices) for _, indices in self.held)


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """Every job, in declaration order (first come, first served survives a restart), and
    since when each idle TaskManager has been idle (wall-clock whole seconds since the epoch,
    sorted by name), so a restart does not give it a fresh idle timeout.

    The JSON form (version 2) is compact, so large clusters stay far below the 1 MiB a
    ConfigMap holds: TaskManager names lose their common prefix (``prefix``, kept once), and
    slots ``0..n-1`` of a TaskManager are written as ``n``::

        {"version":2,"prefix":"c-taskmanager-","jobs":[{"id":"j","slots":6,
         "held":{"1-1":4,"1-2":[1,3]}}],"idle":{"1-3":1700000000}}

    About 12 bytes per TaskManager a job holds (``"1-1234":4,``), 20 per idle one, 30 plus
    the id per job: 10,000 TaskManagers and 1,000 jobs with 64-character ids take about
    0.2 MiB (``tests/unit/test_recovery_state.py`` measures it).
    """

    jobs: tuple[JobState, ...] = ()
    idle: tuple[tuple[str, int], ...] = ()

    @property
    def slots_declared(self) -> int:
        return sum(job.slots for job in self.jobs)

    def to_json(self) -> str:
        names = [name for job in self.jobs for name, _ in job.held]
        names += [name for name, _ in self.idle]
        prefix = _common_prefix(names)
        cut = len(prefix)
        document: dict[str, Any] = {"version": STATE_FORMAT_VERSION, "prefix": prefix}
        document["jobs"] = [
            {
                "id": job.job_id,
                "slots": job.slots,
                "held": {name[cut:]: _compact_indices(indices) for name, indices in job.held},
                **({} if job.origin is None else {"origin": job.origin}),
            }
            for job in self.jobs
        ]
        if self.idle:
            document["idle"] = {name[cut:]: since for name, since in self.idle}
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StateSnapshot:
        """Version 2, or version 1 (no prefix, index lists only, no idle times)."""
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise StateFormatError(f"not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise StateFormatError("expected a JSON object with 'version' and 'jobs'")
        version = document.get("version")
        if version not in (1, STATE_FORMAT_VERSION) or isinstance(version, bool):
            raise StateFormatError(
                f"version: {version!r} is not understood (this rmd reads versions 1 and "
                f"{STATE_FORMAT_VERSION}; written by a newer rmd?)"
            )
        prefix = document.get("prefix", "") if version == STATE_FORMAT_VERSION else ""
        if not isinstance(prefix, str):
            raise StateFormatError(f"prefix: expected a string, got {prefix!r}")
        raw_jobs = document.get("jobs")
        if not isinstance(raw_jobs, list):
            raise StateFormatError("jobs: expected a list")
        jobs: list[JobState] = []
        seen: set[str] = set()
        for number, raw in enumerate(raw_jobs):
            job = _job_from_json(raw, where=f"jobs[{number}]", prefix=prefix)
            if job.job_id in seen:
                raise StateFormatError(f"jobs[{number}].id: {job.job_id!r} appears twice")
            seen.add(job.job_id)
            jobs.append(job)
        idle = _idle_from_json(document.get("idle", {}), prefix=prefix)
        return cls(jobs=tuple(jobs), idle=idle)


def _common_prefix(names: list[str]) -> str:
    """The names' longest common prefix, up to and including its last ``-`` (so what is left
    of each name reads as ``<attempt>-<index>``); "" for none."""
    if not names:
        return ""
    first, last = min(names), max(names)
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return first[: first.rfind("-", 0, length) + 1]


def _compact_indices(indices: tuple[int, ...]) -> int | list[int]:
    """``n`` for the slots ``0..n-1`` (the usual case), else the sorted indices."""
    if indices and indices == tuple(range(len(indices))):
        return len(indices)
    return list(indices)


def _indices_from_json(value: Any, *, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return tuple(range(value))
    if isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value
    ):
        return tuple(sorted(set(value)))
    raise StateFormatError(
        f"{where}: expected a list of slot indices (integers >= 0) or a count n >= 1 "
        f"(slots 0..n-1), got {value!r}"
    )


def _idle_from_json(raw: Any, *, prefix: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw, dict):
        raise StateFormatError("idle: expected an object TaskManager -> idle since (epoch s)")
    idle: list[tuple[str, int]] = []
    for name, since in raw.items():
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise StateFormatError(
                f"idle[{name!r}]: expected whole seconds since the epoch (an integer >= 0), "
                f"got {since!r}"
            )
        idle.append((prefix + name, since))
    return tuple(sorted(idle))


def _job_from_json(raw: Any, *, where: str, prefix: str) -> JobState:
    if not isinstance(raw, dict):
        raise StateFormatError(f"{where}: expected an object with 'id', 'slots' and 'held'")
    job_id = raw.get("id")
    if not isinstance(job_id, str) or not job_id:
        raise StateFormatError(f"{where}.id: expected a non-empty string")
    slots = raw.get("slots")
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 0:
        raise StateFormatError(f"{where}.slots: expected an integer >= 0, got {slots!r}")
    raw_held = raw.get("held", {})
    if not isinstance(raw_held, dict):
        raise StateFormatError(f"{where}.held: expected an object TaskManager -> slot indices")
    held = [
        (prefix + name, _indices_from_json(indices, where=f"{where}.held[{name!r}]"))
        for name, indices in raw_held.items()
    ]
    origin = raw.get("origin")
    if origin is not None and not isinstance(origin, str):
        raise StateFormatError(f"{where}.origin: expected a string, got {origin!r}")
    return JobState(job_id=job_id, slots=slots, held=tuple(sorted(held)), origin=origin)


def job_state(
    job_id: str, slots: int, held: Mapping[str, Iterable[int]], *, origin: str | None = None
) -> JobState:
    """A :class:`JobState` in its canonical form (sorted, so equal states compare equal)."""
    return JobState(
        job_id=job_id,
        slots=slots,
        held=tuple(sorted((name, tuple(sorted(set(ix)))) for name, ix in held.items() if ix)),
        origin=origin,
    )


@dataclass(kw_only=True)
class Recovery:
    """The allocator's recovery bookkeeping (one per allocator; inactive until adoption)."""

    recovery_timeout: float
    # Adopted TaskManager -> {slot index: job}: what it held before the restart.
    reserved: dict[str, dict[int, str]] = field(default_factory=dict)
    # Adopted TaskManager -> since when it was idle before the restart (wall-clock seconds).
    idle_since: dict[str, int] = field(default_factory=dict)
    started_at: float | None = None  # monotonic: adoption
    window_ends: float | None = None  # monotonic; None: no window (or none open yet)
    completed: bool = False
    jobs_restored: int = 0
    slots_declared: int = 0
    slots_reserved: int = 0
    adopted: int = 0
    deleted: int = 0
    reregistered: int = 0

    def expect(self, snapshot: StateSnapshot) -> None:
        """Remember the slots each TaskManager held (before the pods are listed)."""
        self.jobs_restored = len(snapshot.jobs)
        self.slots_declared = snapshot.slots_declared
        self.idle_since = dict(snapshot.idle)
        for job in snapshot.jobs:
            kept = 0
            for name, indices in job.held:
                for index in indices:
                    if kept == job.slots:
                        break  # never more than it declared
                    self.reserved.setdefault(name, {})[index] = job.job_id
                    kept += 1

    def start(self, *, now: float, adopted: Iterable[str], deleted: int) -> None:
        """Pods are adopted: reservations stay only for those; the window opens."""
        adopted_names = set(adopted)
        self.reserved = {n: r for n, r in self.reserved.items() if n in adopted_names}
        self.idle_since = {n: t for n, t in self.idle_since.items() if n in adopted_names}
        self.slots_reserved = sum(len(r) for r in self.reserved.values())
        self.adopted = len(adopted_names)
        self.deleted = deleted
        self.started_at = now
        if self.recovery_timeout > 0 and adopted_names:
            self.window_ends = now + self.recovery_timeout

    def window_open(self, *, now: float) -> bool:
        return self.window_ends is not None and now < self.window_ends

    def take(self, name: str) -> tuple[dict[int, str], int | None]:
        """The slots ``name`` held before the restart, and since when it was idle then (None:
        it was not, or the state is from an rmd that did not keep idle times); once: it
        registered again."""
        return self.reserved.pop(name, {}), self.idle_since.pop(name, None)

    def figures(self) -> RecoveryFigures:
        return RecoveryFigures(
            jobs_restored=self.jobs_restored,
            slots_declared=self.slots_declared,
            slots_reserved=self.slots_reserved,
            adopted=self.adopted,
            deleted=self.deleted,
            reregistered=self.reregistered,
            not_reregistered=self.adopted - self.reregistered,
        )
