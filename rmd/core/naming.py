"""TaskManager pod names: ``<cluster-id>-taskmanager-<attempt>-<index>`` (Flink's scheme).

``attempt`` grows by one every time the daemon starts over (it is the highest attempt found
among existing pods plus one); ``index`` grows by one per pod within the life of a daemon.
The pair makes every name unique, so a pod that is being deleted never blocks its successor.
"""

from __future__ import annotations

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
