"""The allocator's settings: the Flink options that shape its decisions, checked once."""

from __future__ import annotations

from dataclasses import dataclass

from rmd.core.slotcap import SlotCap


@dataclass(frozen=True, kw_only=True)
class AllocatorSettings:
    cluster_id: str
    slots_per_taskmanager: int  # taskmanager.numberOfTaskSlots
    idle_timeout: float = 30.0  # resourcemanager.taskmanager-timeout (s)
    registration_timeout: float = 300.0  # resourcemanager.taskmanager-registration.timeout
    heartbeat_timeout: float = 50.0  # heartbeat.timeout
    max_start_failures_per_minute: float = 10  # resourcemanager.start-worker.max-failure-rate
    start_retry_interval: float = 3.0  # resourcemanager.start-worker.retry-interval
    max_slots: int | None = None  # slotmanager.number-of-slots.max (None = unbounded)
    redundant_taskmanagers: int = 0  # slotmanager.redundant-taskmanager-num
    max_pending_creates: int | None = None  # cap on TaskManagers in state requested at once
    # A pod create that failed because the API server could not be reached is sent again
    # after a backoff growing from create_retry_base to create_retry_max seconds (jittered).
    create_retry_base: float = 1.0
    create_retry_max: float = 10.0
    # A create sent this many seconds ago without an answer: the API server does not
    # complete writes (its storage hangs); the job's reason says so.
    create_unanswered_after: float = 10.0
    # An external usage source (Flink's REST API) has the last word on idleness: an idle
    # TaskManager is released only after it has also reported it idle for idle_timeout.
    external_usage_gate: bool = False
    # resourcemanager.previous-worker.recovery.timeout (s): after a restart, TaskManagers
    # adopted from the previous run count as supply until they register again or this
    # passes (0, Flink's default: they never do).
    recovery_timeout: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not self.cluster_id:
            problems.append("cluster_id must not be empty")
        if self.slots_per_taskmanager < 1:
            problems.append("slots_per_taskmanager must be >= 1")
        for name in (
            "idle_timeout",
            "registration_timeout",
            "heartbeat_timeout",
            "create_unanswered_after",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0")
        if self.recovery_timeout < 0:
            problems.append("recovery_timeout must be >= 0")
        if self.start_retry_interval < 0:
            problems.append("start_retry_interval must be >= 0")
        if self.max_slots is not None and self.max_slots < 0:
            problems.append("max_slots must be >= 0 (or None for no limit)")
        if self.redundant_taskmanagers < 0:
            problems.append("redundant_taskmanagers must be >= 0")
        if self.max_pending_creates is not None and self.max_pending_creates < 1:
            problems.append("max_pending_creates must be >= 1 (or None for no limit)")
        if not 0 < self.create_retry_base <= self.create_retry_max:
            problems.append("create_retry_base must be > 0 and <= create_retry_max")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def slot_cap(self) -> SlotCap:
        return SlotCap(max_slots=self.max_slots, slots_per_taskmanager=self.slots_per_taskmanager)
