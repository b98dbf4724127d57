"""TaskManager pod names: ``<cluster-id>-taskmanager-<attempt>-<index>`` (Flink's scheme).

``attempt`` grows by one every time the daemon starts over (it is the highest attempt found
among existing pods plus one); ``index`` grows by one per pod within the life of a daemon.
The pair makes every name unique, so a pod that is being deleted never blocks its successor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_INFIX = "-taskmanager-"


@dataclass(frozen=True, slots=True, order=True)
class PodNameParts:
    """The numbers in one of our pod names; ordering follows creation order."""

    attempt: int
    index: int


def taskmanager_pod_name(cluster_id: str, *, attempt: int, index: int) -> str:
    if attempt < 1 or index < 1:
        raise ValueError(f"attempt and index start at 1 (got attempt={attempt}, index={index})")
    return f"{cluster_id}{_INFIX}{attempt}-{index}"


def parse_taskmanager_pod_name(pod_name: str, cluster_id: str) -> PodNameParts | None:
    """The attempt and index of ``pod_name``, or None when it is not one of this cluster's names."""
    prefix = f"{cluster_id}{_INFIX}"
    if not pod_name.startswith(prefix):
        return None
    attempt_text, dash, index_text = pod_name[len(prefix) :].partition("-")
    if not dash or not _is_positive_decimal(attempt_text) or not _is_positive_decimal(index_text):
        return None
    return PodNameParts(attempt=int(attempt_text), index=int(index_text))


def _is_positive_decimal(text: str) -> bool:
    # str.isdigit() accepts other scripts' digits and superscripts; names are plain ASCII.
    return (
        0 < len(text) <= 18
        and all("0" <= char <= "9" for char in text)
        and not text.startswith("0")
    )


class PodNamer:
    """Names for new TaskManager pods of one cluster: never a name that exists or existed.

    Indices seen on pods of the current attempt are skipped; after adoption the attempt moves
    past the highest one found, so names of a previous incarnation are never reused.
    """

    def __init__(self, cluster_id: str, *, attempt: int) -> None:
        if attempt < 1:
            raise ValueError(f"attempt starts at 1 (got {attempt})")
        self._cluster_id = cluster_id
        self._attempt = attempt
        self._next_index = 1

    @property
    def attempt(self) -> int:
        return self._attempt

    def parse(self, pod_name: str) -> PodNameParts | None:
        """The parts of one of this cluster's pod names; None for any other name."""
        return parse_taskmanager_pod_name(pod_name, self._cluster_id)

    def reserve(self, parts: PodNameParts) -> None:
        """A pod with this name exists: never hand out its index in the current attempt."""
        if parts.attempt == self._attempt and parts.index >= self._next_index:
            self._next_index = parts.index + 1

    def move_past(self, attempt: int) -> None:
        """Pods of ``attempt`` exist: new names use a later attempt (start-up recovery)."""
        if attempt >= self._attempt:
            self._attempt = attempt + 1
            self._next_index = 1  # no pod can carry the new attempt yet

    def next_name(self, *, taken: Callable[[str], bool]) -> tuple[str, PodNameParts]:
        """The next unused name (skipping any for which ``taken(name)``) and its parts."""
        while True:
            parts = PodNameParts(attempt=self._attempt, index=self._next_index)
            self._next_index += 1
            name = taskmanager_pod_name(self._cluster_id, attempt=parts.attempt, index=parts.index)
            if not taken(name):
                return name, parts
