"""Which TaskManagers Flink uses, from ``/taskmanagers`` and ``/taskmanagers/:id``.

Pure. A TaskManager is idle to Flink only when ``/taskmanagers/:id`` shows all its slots
free and no allocated slot; a list entry with a used slot is busy without asking further.
TaskManagers whose state could not be read are left out of the report: to the allocator
they are unknown, and an unknown TaskManager is never released as idle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rmd.flink.answers import TaskManagerUsage

__all__ = ["needs_details", "usage_report"]


def needs_details(listed: Iterable[TaskManagerUsage], *, ours: Iterable[str]) -> list[str]:
    """The TaskManagers of ``ours`` that the list shows with every slot free: only their
    details can tell whether they are really idle."""
    wanted = set(ours)
    return [tm.taskmanager_id for tm in listed if tm.taskmanager_id in wanted and tm.busy is None]


def usage_report(
    listed: Sequence[TaskManagerUsage], details: Mapping[str, TaskManagerUsage]
) -> dict[str, bool]:
    """TaskManager id -> busy, for every TaskManager whose use is known."""
    report: dict[str, bool] = {}
    for tm in listed:
        busy = tm.busy
        if busy is None and tm.taskmanager_id in details:
            busy = details[tm.taskmanager_id].busy
        if busy is not None:
            report[tm.taskmanager_id] = busy
    return report
