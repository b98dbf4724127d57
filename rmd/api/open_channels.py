"""The open heartbeat channels (:mod:`rmd.api.heartbeat_channel`) and when each last heard a
frame, so that silent ones can be closed as idle HTTP connections are."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rmd.core.clock import Clock

__all__ = ["OpenChannels", "stale_channels"]

C = TypeVar("C", bound=Hashable)


def stale_channels(last_frame: Mapping[C, float], *, now: float, idle_timeout: float) -> list[C]:
    """The channels whose last frame (or upgrade) is ``idle_timeout`` seconds old or older."""
    return [channel for channel, seen in last_frame.items() if now - seen >= idle_timeout]


@dataclass
class OpenChannels(Generic[C]):
    """Each open channel with the monotonic time of its last frame."""

    clock: Clock
    last_frame: dict[C, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.last_frame)

    def seen(self, channel: C) -> None:
        self.last_frame[channel] = self.clock.monotonic()

    def forget(self, channel: C) -> None:
        self.last_frame.pop(channel, None)

    def stale(self, idle_timeout: float) -> list[C]:
        return stale_channels(
            self.last_frame, now=self.clock.monotonic(), idle_timeout=idle_timeout
        )
