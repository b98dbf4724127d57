"""The cluster-wide slot cap (Flink's ``slotmanager.number-of-slots.max``) as one piece of
arithmetic: how much more fits beside what is already in use.

The allocator asks it twice over: how many more slots may be *allocated* (beside the slots
jobs hold), and how many more TaskManagers may be *started* (beside the slots of every
TaskManager requested, pending or registered — whole TaskManagers only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotCap:
    max_slots: int | None  # None: no cap
    slots_per_taskmanager: int

    def slots_allowed(self, wanted: int, *, in_use: int) -> int:
        """How many of ``wanted`` more slots fit under the cap beside ``in_use`` slots."""
        if self.max_slots is None:
            return wanted
        return max(0, min(wanted, self.max_slots - in_use))

    def taskmanagers_allowed(self, wanted: int, *, slots_in_use: int) -> int:
        """How many of ``wanted`` more TaskManagers fit whole under the cap."""
        per_taskmanager = self.slots_per_taskmanager
        return self.slots_allowed(wanted * per_taskmanager, in_use=slots_in_use) // per_taskmanager
