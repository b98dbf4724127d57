"""Parsers for configuration values, in Flink's syntax.

Each parser takes the raw text of one value and returns a plain Python value, or raises
:class:`ValueError` with a sentence that says what was wrong and what is expected. They do
not know the key the text came from; :mod:`rmd.config.flinkconf` adds that.

The syntax follows Flink's own parsers (``TimeUtils.parseDuration``, ``MemorySize.parse``,
``StructuredOptionsSplitter``): a non-negative whole number, optional white space, an
optional unit label; labels are case-insensitive; a bare number is in the option's default
unit. Fractions (``1.5 s``) and negative values are refused, as Flink refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_SECONDS_PER_UNIT: dict[str, float] = {}


def _register_time_unit(seconds: float, *labels: str) -> None:
    for label in labels:
        _SECONDS_PER_UNIT[label] = seconds


# Flink's labels (TimeUtils.TimeUnit), plus "us" for the micro sign that is hard to type.
_register_time_unit(86400.0, "d", "day", "days")
_register_time_unit(3600.0, "h", "hour", "hours")
_register_time_unit(60.0, "min", "m", "minute", "minutes")
_register_time_unit(1.0, "s", "sec", "secs", "second", "seconds")
_register_time_unit(1e-3, "ms", "milli", "millis", "millisecond", "milliseconds")
_register_time_unit(1e-6, "µs", "us", "micro", "micros", "microsecond", "microseconds")
_register_time_unit(1e-9, "ns", "nano", "nanos", "nanosecond", "nanoseconds")

TIME_UNIT_LABELS: tuple[str, ...] = tuple(_SECONDS_PER_UNIT)

# Flink's MemorySize.MemoryUnit: binary multiples.
_BYTES_PER_UNIT: dict[str, int] = {
    "b": 1,
    "bytes": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kibibytes": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mebibytes": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gibibytes": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tebibytes": 1 << 40,
}

MEMORY_UNIT_LABELS: tuple[str, ...] = tuple(_BYTES_PER_UNIT)

_LONG_MAX = (1 << 63) - 1  # Flink parses the number as a Java long
_NUMBER_AND_UNIT = re.compile(r"(?P<number>[0-9]*)\s*(?P<unit>.*)", re.DOTALL)

DURATION_EXAMPLES = "e.g. '30 s', '5 min', '100ms'"
MEMORY_EXAMPLES = "e.g. '1728m', '4 gb', '512k'"


def _split_number_and_unit(text: str, *, what: str, examples: str) -> tuple[int, str]:
    trimmed = text.strip()
    if not trimmed:
        raise ValueError(f"an empty value is not a {what}; expected {examples}")
    match = _NUMBER_AND_UNIT.fullmatch(trimmed)
    assert match is not None  # the pattern matches every string
    number, unit = match.group("number"), match.group("unit").strip().lower()
    if trimmed.startswith("-"):
        raise ValueError(f"'{text}' is negative; a {what} must be >= 0 ({examples})")
    if not number:
        raise ValueError(f"'{text}' is not a {what}; expected {examples}")
    if unit.startswith((".", ",")):
        raise ValueError(
            f"'{text}' is not a {what}: only whole numbers are accepted; "
            f"use a smaller unit instead ({examples})"
        )
    value = int(number)
    if value > _LONG_MAX:
        raise ValueError(f"'{text}' is too large for a {what} (numeric overflow)")
    return value, unit


@dataclass(frozen=True)
class _Units:
    """A family of unit labels (time or memory) and how messages speak of it."""

    what: str  # "duration"
    unit_word: str  # "time unit"
    factors: Mapping[str, float]  # label → size of one unit
    expected: str  # the labels, for messages
    examples: str


_TIME_LABELS = "d, h, min, s, ms, us, ns (or day(s), hour(s), minute(s), second(s), milli(s), ...)"
_MEMORY_LABELS = "b, k/kb, m/mb, g/gb, t/tb (binary: 1k = 1024 bytes)"
_TIME = _Units("duration", "time unit", _SECONDS_PER_UNIT, _TIME_LABELS, DURATION_EXAMPLES)
_MEMORY = _Units("memory size", "unit", _BYTES_PER_UNIT, _MEMORY_LABELS, MEMORY_EXAMPLES)


def _number_and_factor(text: str, units: _Units, *, default_unit: str) -> tuple[int, float]:
    """The number in ``text`` and the size of its unit (``default_unit`` when it has none)."""
    factor = units.factors.get(default_unit.lower())
    if factor is None:
        raise ValueError(f"unknown default {units.unit_word} '{default_unit}'")
    value, unit = _split_number_and_unit(text, what=units.what, examples=units.examples)
    if unit:
        label_factor = units.factors.get(unit)
        if label_factor is None:
            raise ValueError(
                f"'{text}' is not a {units.what}: unknown {units.unit_word} '{unit}'; "
                f"expected one of {units.expected}, {units.examples}"
            )
        factor = label_factor
    return value, factor


def parse_duration(text: str, *, default_unit: str = "ms") -> float:
    """``'30 s'`` → ``30.0``: a duration in seconds. A bare number is in ``default_unit``."""
    value, seconds = _number_and_factor(text, _TIME, default_unit=default_unit)
    return value * seconds


def parse_memory_size(text: str, *, default_unit: str = "b") -> int:
    """``'1728m'`` → ``1811939328``: a memory size in bytes (k = 1024). Bare = ``default_unit``."""
    value, unit_bytes = _number_and_factor(text, _MEMORY, default_unit=default_unit)
    size = value * int(unit_bytes)
    if size > _LONG_MAX:
        raise ValueError(f"'{text}' is too large for a memory size (numeric overflow)")
    return size


def parse_bool(text: str) -> bool:
    """``'true'``/``'false'``, any case, as Flink accepts them; nothing else."""
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError(f"'{text}' is not a boolean; expected true or false")


def split_outside_quotes(text: str, separator: str, *, keep_quotes: bool = False) -> list[str]:
    """Split ``text`` at ``separator`` except inside '...' or "..." quotes.

    Quotes are removed (unless ``keep_quotes``); a doubled quote character inside a quoted
    part stands for the quote itself (Flink's ``StructuredOptionsSplitter``). Parts are not
    stripped.
    """
    if not separator:
        raise ValueError("the separator must not be empty")
    parts: list[str] = []
    current: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(text):
        char = text[index]
        if quote is not None:
            if char == quote:
                if text.startswith(quote, index + 1):
                    current.append(quote * 2 if keep_quotes else quote)
                    index += 2
                    continue
                quote = None
                if keep_quotes:
                    current.append(char)
            else:
                current.append(char)
            index += 1
            continue
        if char in "'\"":
            quote = char
            if keep_quotes:
                current.append(char)
        elif text.startswith(separator, index):
            parts.append("".join(current))
            current = []
            index += len(separator)
            continue
        else:
            current.append(char)
        index += 1
    if quote is not None:
        raise ValueError(f"'{text}' has an unclosed {quote} quote")
    parts.append("".join(current))
    return parts


def parse_list(text: str, *, separator: str = ";") -> list[str]:
    """``'a;b;c'`` → ``['a', 'b', 'c']``; items are stripped, empty items dropped."""
    stripped = (item.strip() for item in split_outside_quotes(text, separator))
    return [item for item in stripped if item]


def parse_map(text: str) -> dict[str, str]:
    """``'k1:v1,k2:v2'`` → ``{'k1': 'v1', 'k2': 'v2'}``.

    Each entry is split at its first ':' (so values may contain ':', e.g. URLs); quote an
    entry or key to put ',' or ':' into it. Keys and values are stripped; a key must not be
    empty; a value may be.
    """
    result: dict[str, str] = {}
    for entry in split_outside_quotes(text, ",", keep_quotes=True):
        if not entry.strip():
            continue
        pieces = split_outside_quotes(entry, ":")
        if len(pieces) < 2:
            raise ValueError(
                f"'{text}' is not a map: entry '{entry.strip()}' has no ':'; "
                "expected 'key1:value1,key2:value2'"
            )
        key = pieces[0].strip()
        if not key:
            raise ValueError(
                f"'{text}' is not a map: entry '{entry.strip()}' has an empty key; "
                "expected 'key1:value1,key2:value2'"
            )
        result[key] = ":".join(pieces[1:]).strip()
    return result


def format_duration(seconds: float) -> str:
    """``30.0`` → ``'30 s'``: the largest Flink unit that shows the value exactly."""
    for label, unit_seconds in (
        ("d", 86400.0),
        ("h", 3600.0),
        ("min", 60.0),
        ("s", 1.0),
        ("ms", 1e-3),
        ("us", 1e-6),
    ):
        count = seconds / unit_seconds
        if count >= 1 and abs(count - round(count)) < 1e-6:
            return f"{round(count)} {label}"
    if seconds == 0:
        return "0 ms"
    return f"{round(seconds / 1e-9)} ns"


def format_memory_size(size_bytes: int) -> str:
    """``1811939328`` → ``'1728m'``: the largest binary unit that shows the value exactly."""
    for label, unit_bytes in (("t", 1 << 40), ("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size_bytes >= unit_bytes and size_bytes % unit_bytes == 0:
            return f"{size_bytes // unit_bytes}{label}"
    return f"{size_bytes}b"
