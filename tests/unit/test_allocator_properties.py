"""Random event sequences against the real Allocator, with invariants after every step.

A tiny simulated edge plays Kubernetes and the TaskManagers: it carries out CreatePod (the
create later succeeds or fails) and DeletePod (the pod goes, and the watch reports it),
schedules pods, crashes them, deletes them behind the daemon's back, registers TaskManagers,
sends heartbeats and goodbyes, lists everything (resync), and moves a manual clock. With the
release gate on it also plays Flink's view of TaskManager usage: random reports of which
TaskManagers are busy or idle, and outages of the source.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rmd.core.allocator import Allocator, AllocatorSettings
from rmd.core.clock import ManualClock
from rmd.core.model import (
    Action,
    CreatePod,
    CreateRetryScheduled,
    DeletePod,
    JobView,
    LossReason,
    PodObservation,
    RegistrationRefused,
    ReleaseReason,
    StartFailure,
    StartsThrottled,
    TaskManagerLost,
    TaskManagerRegistered,
    TaskManagerState,
    TaskManagerView,
    UnknownJob,
    UnknownTaskManager,
)

CLUSTER = "prop"
JOBS = ("a", "b")
REGISTERED = TaskManagerState.REGISTERED
RELEASING = TaskManagerState.RELEASING
COMING = (TaskManagerState.REQUESTED, TaskManagerState.PENDING)
EPSILON = 1e-6
DELETIONS = (LossReason.POD_DELETED, LossReason.POD_MISSING)
# What the external usage source says of one registered TaskManager in a report.
USAGE_WORDS = ("as rmd sees it", "idle", "busy", "missing")


class AllocatorMachine(RuleBasedStateMachine):
    """The invariants of core.md, checked after every rule."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.allocator: Allocator
        self.config: AllocatorSettings
        self.in_flight_creates: list[str] = []
        self.pods: dict[str, PodObservation] = {}
        self.pending_deletes: list[str] = []
        self.every_create: list[str] = []
        # Creates that failed because the API server was unreachable: only these may be sent
        # again, under the same name.
        self.may_resend: set[str] = set()
        self.careful = False  # the failure limit tripped since the last registration
        self.orphans = 0
        # With the release gate: registered TaskManager -> wall time since which the external
        # usage source has reported it idle without a break (busy, missing or unknown: absent).
        self.externally_idle_since: dict[str, float] = {}
        # The stored-state generation and the snapshot built afresh at the last check.
        self.last_stored: tuple[int, object] | None = None

    # ------------------------------------------------------------------ set-up

    @initialize(
        spt=st.integers(1, 4),
        max_slots=st.one_of(st.none(), st.integers(0, 16)),
        redundant=st.integers(0, 2),
        max_pending=st.one_of(st.none(), st.integers(1, 3)),
        limit=st.integers(1, 5),
        retry=st.sampled_from([1.0, 3.0]),
        gate=st.booleans(),
    )
    def setup(
        self,
        spt: int,
        max_slots: int | None,
        redundant: int,
        max_pending: int | None,
        limit: int,
        retry: float,
        gate: bool,
    ) -> None:
        self.config = AllocatorSettings(
            cluster_id=CLUSTER,
            slots_per_taskmanager=spt,
            idle_timeout=30.0,
            registration_timeout=120.0,
            heartbeat_timeout=50.0,
            max_start_failures_per_minute=limit,
            start_retry_interval=retry,
            max_slots=max_slots,
            redundant_taskmanagers=redundant,
            max_pending_creates=max_pending,
            external_usage_gate=gate,
        )
        self.allocator = Allocator(self.config, clock=self.clock)

    # ------------------------------------------------------------------ the edge

    def apply(self, actions: list[Action], *, before: dict[str, TaskManagerView]) -> None:
        created = [
            a.name for a in actions if isinstance(a, CreatePod) and a.name not in self.every_create
        ]
        for action in actions:
            if isinstance(action, CreatePod):
                # One create in flight per pod; a name comes back only to resend a create the
                # API server could not take (never a second pod, never a reused name).
                assert action.name not in self.in_flight_creates, f"twice: {action.name}"
                if action.name in self.every_create:
                    assert action.name in self.may_resend, f"name reused: {action.name}"
                    self.may_resend.discard(action.name)
                else:
                    self.every_create.append(action.name)
                self.in_flight_creates.append(action.name)
            elif isinstance(action, CreateRetryScheduled):
                self.may_resend.add(action.taskmanager_id)
            elif isinstance(action, DeletePod):
                previous = before.get(action.name)
                if previous is not None and previous.state is RELEASING:
                    # A delete sent again (a resync still lists the pod): not a new decision.
                    if action.name not in self.pending_deletes:
                        self.pending_deletes.append(action.name)
                    continue
                if action.reason in (ReleaseReason.IDLE, ReleaseReason.EXCESS):
                    held = before[action.name].slots_allocated
                    assert held == 0, f"{action.name} released with {held} slots"
                if action.reason is ReleaseReason.IDLE:
                    self.check_idle_release(before[action.name])
                if action.name not in self.pending_deletes:
                    self.pending_deletes.append(action.name)
            elif isinstance(action, StartsThrottled):
                self.careful = True
            elif isinstance(action, TaskManagerRegistered):
                self.careful = False
        if created:
            self.check_creation_was_allowed()
        # A deleted pod is no failed start, whoever deleted it.
        deleted_pods = {
            a.taskmanager_id
            for a in actions
            if isinstance(a, TaskManagerLost) and a.reason in DELETIONS
        }
        failed = {a.taskmanager_id for a in actions if isinstance(a, StartFailure)}
        assert not deleted_pods & failed, deleted_pods & failed
        for action in actions:
            if isinstance(action, DeletePod) and self.allocator.is_known_pod(action.name):
                # Decided deletes leave nothing behind holding slots.
                view = self.allocator.taskmanager_view(action.name)
                assert view.state is RELEASING
                assert view.slots_allocated == 0

    def check_idle_release(self, view: TaskManagerView) -> None:
        assert view.idle_since is not None
        idle_for = self.clock.wall() - view.idle_since
        assert idle_for >= self.config.idle_timeout - EPSILON, f"released after {idle_for} s"
        if self.config.external_usage_gate:
            # Never released while the source last said busy, said nothing, or was unreachable;
            # and only once it has said idle for the whole timeout.
            since = self.externally_idle_since.get(view.taskmanager_id)
            assert since is not None, f"{view.taskmanager_id} released without the source's word"
            idle_for = self.clock.wall() - since
            assert idle_for >= self.config.idle_timeout - EPSILON, f"source idle {idle_for} s"
        # What stays free still covers the demand the cap allows plus the spares.
        unmet, spare_slots = self.unmet_and_spares()
        assert self.allocator.status().slots_free >= unmet + spare_slots

    def unmet_and_spares(self) -> tuple[int, int]:
        """Unmet demand within max_slots, and the free slots the spares should provide."""
        status = self.allocator.status()
        jobs = self.allocator.job_views()
        unmet = status.pending_slot_demand
        if self.config.max_slots is not None:
            unmet = min(unmet, max(0, self.config.max_slots - status.slots_allocated))
        spares = self.config.redundant_taskmanagers if any(j.slots_required for j in jobs) else 0
        return unmet, spares * self.config.slots_per_taskmanager

    def check_creation_was_allowed(self) -> None:
        status = self.allocator.status()
        assert status.starts_throttled_until is None, "created a pod during a start pause"
        if self.careful:
            coming = status.taskmanagers["requested"] + status.taskmanagers["pending"]
            failures = status.extra["start_failures_last_minute"]
            allowed = max(math.floor(self.config.max_start_failures_per_minute), 1)
            assert failures + coming <= max(allowed, 1) or coming == 1, (failures, coming)

    def call(self, method: Any, *args: Any, **kwargs: Any) -> list[Action]:
        before = {v.taskmanager_id: v for v in self.allocator.taskmanager_views()}
        actions: list[Action] = method(*args, **kwargs)
        self.apply(actions, before=before)
        return actions

    def views_in(self, *states: TaskManagerState) -> list[TaskManagerView]:
        return [v for v in self.allocator.taskmanager_views() if v.state in states]

    @staticmethod
    def pick(items: list[Any], index: int) -> Any:
        return items[index % len(items)]

    # ------------------------------------------------------------------ JobMaster rules

    @rule(job=st.sampled_from(JOBS), slots=st.one_of(st.just(0), st.integers(0, 12)))
    def declare(self, job: str, slots: int) -> None:
        self.call(self.allocator.declare, job, slots)
        assert self.allocator.job_view(job).slots_required == slots

    @rule(job=st.sampled_from(JOBS))
    def remove_job(self, job: str) -> None:
        known = job in {v.job_id for v in self.allocator.job_views()}
        try:
            self.call(self.allocator.remove_job, job)
        except UnknownJob:
            assert not known
        else:
            assert known
            assert job not in {v.job_id for v in self.allocator.job_views()}

    # ------------------------------------------------------------------ Kubernetes rules

    @precondition(lambda self: self.in_flight_creates)
    @rule(
        index=st.integers(0, 100),
        outcome=st.sampled_from(["created", "refused", "api down", "api down, pod created"]),
    )
    def complete_create(self, index: int, outcome: str) -> None:
        name = self.in_flight_creates.pop(index % len(self.in_flight_creates))
        if name in self.pods:
            outcome = "created"  # a 409 for our own pod: the gateway takes it as done
        if outcome == "created":
            self.pods[name] = PodObservation(name)
            self.call(self.allocator.create_succeeded, name)
        elif outcome == "refused":
            self.call(self.allocator.create_failed, name, reason="Forbidden", message="quota")
        else:
            if outcome == "api down, pod created":
                self.pods[name] = PodObservation(name)  # the create got in, its answer was lost
            actions = self.call(
                self.allocator.create_failed,
                name,
                reason="ConnectionError",
                message="connection refused",
                api_unavailable=True,
            )
            # The API server's trouble is no pod's failed start.
            assert not [a for a in actions if isinstance(a, StartFailure | StartsThrottled)]

    @precondition(lambda self: self.pending_deletes)
    @rule(index=st.integers(0, 100))
    def complete_delete(self, index: int) -> None:
        name = self.pending_deletes.pop(index % len(self.pending_deletes))
        self.pods.pop(name, None)
        self.call(self.allocator.pod_deleted, name)  # DELETED event, or the delete's 404

    @precondition(lambda self: self.pods)
    @rule(index=st.integers(0, 100))
    def schedule_pod(self, index: int) -> None:
        name = self.pick(sorted(self.pods), index)
        if self.pods[name].finished:
            return
        self.pods[name] = PodObservation(name, phase="Running", node_name="n1", pod_ip="10.0.0.1")
        self.call(self.allocator.pod_observed, self.pods[name])

    @precondition(lambda self: self.pods)
    @rule(index=st.integers(0, 100))
    def pod_has_problem(self, index: int) -> None:
        name = self.pick(sorted(self.pods), index)
        if self.pods[name].finished:
            return
        self.pods[name] = PodObservation(
            name, node_name="n1", waiting_problem=("ImagePullBackOff", "no such image")
        )
        self.call(self.allocator.pod_observed, self.pods[name])

    @precondition(lambda self: self.pods)
    @rule(index=st.integers(0, 100), exit_code=st.sampled_from([None, 0, 1, 137]))
    def pod_crashes(self, index: int, exit_code: int | None) -> None:
        name = self.pick(sorted(self.pods), index)
        phase = "Failed" if exit_code is None else "Running"
        self.pods[name] = PodObservation(
            name, phase=phase, node_name="n1", terminated_exit_code=exit_code
        )
        self.call(self.allocator.pod_observed, self.pods[name])

    @precondition(lambda self: self.pods)
    @rule(index=st.integers(0, 100))
    def pod_deleted_behind_our_back(self, index: int) -> None:
        name = self.pick(sorted(self.pods), index)
        del self.pods[name]
        self.call(self.allocator.pod_deleted, name)

    @precondition(lambda self: self.orphans < 3)
    @rule()
    def stranger_pod_appears(self) -> None:
        self.orphans += 1
        name = f"{CLUSTER}-taskmanager-99-{self.orphans}"
        self.pods[name] = PodObservation(name, phase="Running", node_name="n1")
        actions = self.call(self.allocator.pod_observed, self.pods[name])
        assert DeletePod(name, ReleaseReason.ORPHAN) in actions
        assert not self.allocator.is_known_pod(name)

    @rule()
    def resync(self) -> None:
        self.call(self.allocator.resync, list(self.pods.values()))

    # ------------------------------------------------------------------ TaskManager rules

    @precondition(lambda self: self.pods)
    @rule(index=st.integers(0, 100))
    def register(self, index: int) -> None:
        name = self.pick(sorted(self.pods), index)
        if self.pods[name].finished or not self.pods[name].scheduled:
            return  # its process is not running
        known = self.allocator.is_known_pod(name)
        releasing = known and self.allocator.taskmanager_view(name).state is RELEASING
        try:
            self.call(
                self.allocator.register,
                name,
                address="10.0.0.1:6122",
                slots=self.config.slots_per_taskmanager,
            )
        except RegistrationRefused:
            assert releasing or not known
        else:
            assert self.allocator.taskmanager_view(name).state is REGISTERED

    @precondition(lambda self: self.pods)
    @rule(index=st.integers(0, 100))
    def heartbeat(self, index: int) -> None:
        name = self.pick(sorted(self.pods), index)
        registered = (
            self.allocator.is_known_pod(name)
            and self.allocator.taskmanager_view(name).state is REGISTERED
        )
        try:
            self.call(self.allocator.heartbeat, name)
        except UnknownTaskManager:
            assert not registered
        else:
            assert registered

    @precondition(lambda self: self.in_flight_creates or self.views_in(*COMING))
    @rule(index=st.integers(0, 100))
    def a_taskmanager_starts(self, index: int) -> None:
        """The common path in one go: create done, pod scheduled and running, registered."""
        names = sorted(
            set(self.in_flight_creates) | {v.taskmanager_id for v in self.views_in(*COMING)}
        )
        name = self.pick(names, index)
        if name in self.in_flight_creates:
            self.in_flight_creates.remove(name)
            self.pods[name] = PodObservation(name)
            self.call(self.allocator.create_succeeded, name)
        if name not in self.pods:
            return  # its create is still in flight elsewhere
        self.pods[name] = PodObservation(name, phase="Running", node_name="n1", pod_ip="10.0.0.3")
        self.call(self.allocator.pod_observed, self.pods[name])
        if (
            self.allocator.is_known_pod(name)
            and self.allocator.taskmanager_view(name).state in COMING
        ):
            self.call(
                self.allocator.register,
                name,
                address="10.0.0.3:6122",
                slots=self.config.slots_per_taskmanager,
            )

    @rule()
    def every_taskmanager_heartbeats(self) -> None:
        for view in self.views_in(REGISTERED):
            self.call(self.allocator.heartbeat, view.taskmanager_id)

    @precondition(lambda self: self.pods)
    @rule(index=st.integers(0, 100))
    def deregister(self, index: int) -> None:
        name = self.pick(sorted(self.pods), index)
        known = self.allocator.is_known_pod(name)
        try:
            self.call(self.allocator.deregister, name)
        except UnknownTaskManager:
            assert not known
        else:
            assert self.allocator.taskmanager_view(name).state is RELEASING

    # ------------------------------------------------------------------ external usage

    @precondition(lambda self: self.config.external_usage_gate)
    @rule(
        words=st.lists(st.sampled_from(USAGE_WORDS), min_size=1, max_size=6),
        stranger=st.booleans(),
    )
    def report_external_usage(self, words: list[str], stranger: bool) -> None:
        """The source reports every TaskManager it knows: busy or idle, as rmd sees it or
        not (Flink places tasks its own way); some it does not list at all."""
        report: dict[str, bool] = {}
        idle_since: dict[str, float] = {}
        for index, view in enumerate(self.views_in(REGISTERED)):
            word = words[index % len(words)]
            if word == "missing":
                continue
            busy = bool(view.slots_allocated) if word == "as rmd sees it" else word == "busy"
            report[view.taskmanager_id] = busy
            if not busy:
                since = self.externally_idle_since.get(view.taskmanager_id, self.clock.wall())
                idle_since[view.taskmanager_id] = since
        if stranger:
            report[f"{CLUSTER}-not-ours"] = False  # not rmd's: ignored
        self.externally_idle_since = idle_since
        self.call(self.allocator.observe_external_usage, report)

    @precondition(lambda self: self.config.external_usage_gate)
    @rule(
        words=st.lists(st.sampled_from(USAGE_WORDS), min_size=1, max_size=6),
        seconds=st.sampled_from([10.0, 31.0, 61.0]),
    )
    def source_polled_while_time_passes(self, words: list[str], seconds: float) -> None:
        """As the follower does: a report every few seconds while time passes."""
        while seconds > 0:
            self.report_external_usage(words, stranger=False)
            step = min(seconds, 4.0)
            self.every_taskmanager_heartbeats()
            self.clock.advance(step)
            self.call(self.allocator.tick)
            seconds -= step

    @precondition(lambda self: self.config.external_usage_gate)
    @rule()
    def external_usage_unknown(self) -> None:
        self.externally_idle_since.clear()
        assert self.call(self.allocator.external_usage_unknown) == []

    # ------------------------------------------------------------------ time

    @rule(
        seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0, 29.9, 30.0, 45.0, 61.0, 130.0]),
        healthy=st.booleans(),
    )
    def advance(self, seconds: float, healthy: bool) -> None:
        """Time passes; healthy TaskManagers send heartbeats all along."""
        while seconds > 0:
            step = min(seconds, 10.0) if healthy else seconds
            if healthy:
                self.every_taskmanager_heartbeats()
            self.clock.advance(step)
            self.call(self.allocator.tick)
            seconds -= step

    @rule(job=st.sampled_from(JOBS))
    def job_scales_down_then_a_quiet_minute(self, job: str) -> None:
        self.call(self.allocator.declare, job, 0)
        self.advance(60.0, healthy=True)

    @rule()
    def everything_settles(self) -> None:
        """Let the edge do everything right; then every job gets what the cap allows.

        After a run of failures it can take up to a minute (the failures leaving the
        start-failure window) plus the pause before pods start again: give it 150 s.
        """
        self.resync()  # the watch reports every pod: pods nobody knows are found
        for _ in range(150):
            while self.in_flight_creates:
                name = self.in_flight_creates.pop(0)
                self.pods[name] = PodObservation(
                    name, phase="Running", node_name="n1", pod_ip="10.0.0.2"
                )
                self.call(self.allocator.create_succeeded, name)
                self.call(self.allocator.pod_observed, self.pods[name])
            while self.pending_deletes:
                name = self.pending_deletes.pop(0)
                self.pods.pop(name, None)
                self.call(self.allocator.pod_deleted, name)
            for view in self.views_in(*COMING):
                pod = self.pods.get(view.taskmanager_id)
                if pod is None or pod.finished or not pod.scheduled:
                    pod = PodObservation(view.taskmanager_id, phase="Running", node_name="n1")
                    self.pods[view.taskmanager_id] = pod
                    self.call(self.allocator.resync, list(self.pods.values()))
                    continue
                self.call(
                    self.allocator.register,
                    view.taskmanager_id,
                    address="10.0.0.2:6122",
                    slots=self.config.slots_per_taskmanager,
                )
            if not (
                self.in_flight_creates or self.pending_deletes or self.views_in(*COMING)
            ) and all(self.settled(job) for job in self.allocator.job_views()):
                break
            for view in self.views_in(REGISTERED):
                self.call(self.allocator.heartbeat, view.taskmanager_id)
            self.clock.advance(1.0)
            self.call(self.allocator.tick)
        assert not self.in_flight_creates
        assert not self.views_in(*COMING)
        # No pod left behind: even a create whose answer was lost has a known owner or is gone.
        leaked = [name for name in self.pods if not self.allocator.is_known_pod(name)]
        assert not leaked, leaked
        for job in self.allocator.job_views():
            if not job.fulfilled:
                assert self.config.max_slots is not None, job
                assert "slotmanager.number-of-slots.max" in (job.unfulfilled_reason or ""), job

    def settled(self, job: JobView) -> bool:
        reason = job.unfulfilled_reason or ""
        capped = self.config.max_slots is not None and "slotmanager.number-of-slots.max" in reason
        return job.fulfilled or capped

    # ------------------------------------------------------------------ invariants

    @invariant()
    def state_generation_moves_exactly_with_the_stored_state(self) -> None:
        """The generation (which spares the state writer the snapshot) changes exactly when
        the snapshot, built afresh from every record, does; the cached one is that."""
        if not hasattr(self, "allocator"):
            return
        generation = self.allocator.state_generation()
        fresh = self.allocator._build_snapshot()  # the reference: from every record
        assert self.allocator.state_snapshot() == fresh
        if self.last_stored is not None:
            last_generation, last_snapshot = self.last_stored
            assert (generation == last_generation) == (fresh == last_snapshot), (
                f"generation {last_generation} -> {generation}, snapshot {last_snapshot} -> {fresh}"
            )
        self.last_stored = (generation, fresh)

    @invariant()
    def slots_are_consistent(self) -> None:
        if not hasattr(self, "allocator"):
            return
        tm_views = {v.taskmanager_id: v for v in self.allocator.taskmanager_views()}
        seen: set[str] = set()
        for job in self.allocator.job_views():
            assert job.slots_allocated <= job.slots_required
            assert job.slots_allocated == len(job.slots)
            # the long poll's O(1) question agrees with the view
            assert self.allocator.job_fulfilled(job.job_id) == job.fulfilled
            for slot in job.slots:
                assert slot.slot_id not in seen, f"slot allocated twice: {slot.slot_id}"
                seen.add(slot.slot_id)
                holder = tm_views[slot.taskmanager_id]
                assert holder.state is REGISTERED, f"slot on a {holder.state} TaskManager"
                assert (slot.slot_id, job.job_id) in {(s.slot_id, s.job_id) for s in holder.slots}
        on_taskmanagers = {
            s.slot_id for v in tm_views.values() for s in v.slots if s.job_id is not None
        }
        assert on_taskmanagers == seen
        status = self.allocator.status()
        jobs = self.allocator.job_views()
        assert status.slots_allocated == len(seen)
        assert status.pending_slot_demand == sum(j.slots_required - j.slots_allocated for j in jobs)

    @invariant()
    def pods_stay_within_demand_and_caps(self) -> None:
        if not hasattr(self, "allocator"):
            return
        config = self.config
        spt = config.slots_per_taskmanager
        views = self.allocator.taskmanager_views()
        status = self.allocator.status()
        live = [v for v in views if v.state is not RELEASING]
        if config.max_slots is not None:
            assert sum(v.slots_total for v in live) <= config.max_slots
        if config.max_pending_creates is not None:
            assert status.taskmanagers["requested"] <= config.max_pending_creates
        jobs = self.allocator.job_views()
        demand = sum(j.slots_required for j in jobs)
        if config.max_slots is not None:
            demand = min(demand, config.max_slots)
        spares = config.redundant_taskmanagers if any(j.slots_required for j in jobs) else 0
        holding = sum(1 for v in live if v.slots_allocated)
        busy_or_coming = [v for v in live if v.state is not REGISTERED or v.slots_allocated]
        assert len(busy_or_coming) <= max(math.ceil(demand / spt) + spares, holding)
        # Nothing on its way that the demand (plus spares) does not need.
        coming = [v for v in live if v.state in COMING]
        unmet, spare_slots = self.unmet_and_spares()
        if coming:
            assert status.slots_free + (len(coming) - 1) * spt < unmet + spare_slots

    @invariant()
    def idle_taskmanagers_go_on_time(self) -> None:
        if not hasattr(self, "allocator"):
            return
        status = self.allocator.status()
        unmet, spare_slots = self.unmet_and_spares()
        for view in self.views_in(REGISTERED):
            if view.slots_allocated:
                assert view.idle_since is None
                continue
            assert view.idle_since is not None
            idle_from = view.idle_since
            if self.config.external_usage_gate:
                source_idle_since = self.externally_idle_since.get(view.taskmanager_id)
                if source_idle_since is None:
                    continue  # busy or unknown to the source: no timer runs
                idle_from = max(idle_from, source_idle_since)
            if self.clock.wall() - idle_from >= self.config.idle_timeout + EPSILON:
                # Overdue: only kept because demand or the spares need its slots.
                assert status.slots_free - view.slots_total < unmet + spare_slots

    @invariant()
    def next_deadline_is_the_brute_force_one(self) -> None:
        """The deadline queue (lazy, armed only where a timer may come earlier) agrees with
        walking every TaskManager, as the allocator once did on every tick."""
        if not hasattr(self, "allocator"):
            return
        assert self.allocator.next_deadline() == brute_force_next_deadline(self.allocator)

    @invariant()
    def timers_are_in_the_future(self) -> None:
        if not hasattr(self, "allocator"):
            return
        deadline = self.allocator.next_deadline()
        assert deadline is None or deadline > self.clock.monotonic()


def brute_force_next_deadline(allocator: Allocator) -> float | None:
    """The reference: every timer of every TaskManager from its record, the earliest."""
    config = allocator.settings
    lifecycle = allocator._lifecycle
    now = allocator._clock.monotonic()
    paused_until = lifecycle.limiter.paused_until(now)
    deadlines: list[float] = []
    for tm in allocator._taskmanagers:
        if tm.create_retry is not None:
            if tm.state is TaskManagerState.REQUESTED:
                at = tm.create_retry.at
                deadlines.append(at if paused_until is None else max(at, paused_until))
        elif tm.is_coming:
            deadlines.append(tm.created_at + config.registration_timeout)
        elif tm.is_registered:
            if tm.last_heartbeat is not None:
                deadlines.append(tm.last_heartbeat + config.heartbeat_timeout)
            release_at = lifecycle.idle_release_at(tm)
            if release_at is not None and not tm.idle_checked:
                deadlines.append(release_at)
    limiter_at = lifecycle.limiter.next_deadline(now)
    if limiter_at is not None:
        deadlines.append(limiter_at)
    return min(deadlines, default=None)


AllocatorMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAllocatorProperties = AllocatorMachine.TestCase
