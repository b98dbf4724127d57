"""What the node emulator does with one pod, read from its annotations and spec (pure).

The annotations are described in :mod:`rmd_dev.emulator`.
"""

from __future__ import annotations

import enum
import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ANNOTATION_PREFIX = "emulator.rmd.dev/"
RUN_ANNOTATION = ANNOTATION_PREFIX + "run"
WORKLOAD_ANNOTATION = ANNOTATION_PREFIX + "workload"
IMAGE_PULL_ERROR_ANNOTATION = ANNOTATION_PREFIX + "image-pull-error"
CRASH_AFTER_ANNOTATION = ANNOTATION_PREFIX + "crash-after"
DEFAULT_WORKLOAD = "rmd-agent"

Pod = Mapping[str, Any]  # a pod as the API server's JSON (camelCase keys)


class RunMode(enum.StrEnum):
    PAUSE = "pause"  # Running with no process, like a pause container (the default)
    PROCESS = "process"  # each container's command + args run as a local OS process
    COROUTINE = "coroutine"  # a registered in-process workload plays the first container


@dataclass(frozen=True, slots=True)
class PodPlan:
    run_mode: RunMode
    workload: str  # only for RunMode.COROUTINE
    # Containers whose image cannot be pulled (simulated), by name; empty = all pull fine.
    unpullable_containers: frozenset[str]
    # Seconds after the start at which every container dies with exit code 1; None = never.
    crash_after: float | None
    problems: tuple[str, ...] = ()  # annotations that could not be read, for the log


def annotations_of(pod: Pod) -> Mapping[str, str]:
    annotations = pod.get("metadata", {}).get("annotations") or {}
    return {str(key): str(value) for key, value in annotations.items()}


def containers_of(pod: Pod) -> list[Mapping[str, Any]]:
    return list(pod.get("spec", {}).get("containers") or [])


def init_containers_of(pod: Pod) -> list[Mapping[str, Any]]:
    return list(pod.get("spec", {}).get("initContainers") or [])


def image_matches(image: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)


def parse_image_patterns(text: str | None) -> tuple[str, ...]:
    """``--unpullable-images`` value: comma-separated fnmatch patterns."""
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


def plan_pod(pod: Pod, *, unpullable_images: Sequence[str] = ()) -> PodPlan:
    annotations = annotations_of(pod)
    problems: list[str] = []

    raw_mode = annotations.get(RUN_ANNOTATION, "").strip().lower()
    try:
        run_mode = RunMode(raw_mode) if raw_mode else RunMode.PAUSE
    except ValueError:
        problems.append(f"{RUN_ANNOTATION}={raw_mode!r} is not process|coroutine; no process runs")
        run_mode = RunMode.PAUSE

    workload = annotations.get(WORKLOAD_ANNOTATION, "").strip() or DEFAULT_WORKLOAD

    pull_error_for_all = annotations.get(IMAGE_PULL_ERROR_ANNOTATION, "").strip().lower() == "true"
    unpullable = frozenset(
        str(container.get("name", ""))
        for container in containers_of(pod)
        if pull_error_for_all or image_matches(str(container.get("image", "")), unpullable_images)
    )

    crash_after: float | None = None
    raw_crash = annotations.get(CRASH_AFTER_ANNOTATION)
    if raw_crash is not None:
        try:
            crash_after = float(raw_crash)
        except ValueError:
            crash_after = None
        if crash_after is None or not math.isfinite(crash_after) or crash_after < 0:
            problems.append(f"{CRASH_AFTER_ANNOTATION}={raw_crash!r} is not a number of seconds")
            crash_after = None

    return PodPlan(
        run_mode=run_mode,
        workload=workload,
        unpullable_containers=unpullable,
        crash_after=crash_after,
        problems=tuple(problems),
    )
