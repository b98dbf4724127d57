"""The one error configuration problems raise."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, described in one line: key, value, expectation, fix.

    e.g. ``resourcemanager.taskmanager-timeout: '30 parsecs' is not a duration; expected
    e.g. '30 s', '5 min', '100ms'``. ``key`` is the configuration key at fault, when one is.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key

    def __str__(self) -> str:
        return self.message
