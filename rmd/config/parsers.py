"""Parsers of one configuration value: the raw text in, a checked Python value out.

Each parser raises :class:`ValueError` with a sentence saying what is wrong with the value
and what is expected; :class:`rmd.config.flinkconf.FlinkConfiguration` prefixes the key and
where it was set. Parsers take the text exactly as configured (not stripped), so messages
quote what the user wrote. The syntax is Flink's (:mod:`rmd.config.values`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from rmd.config.values import (
    parse_bool,
    parse_duration,
    parse_list,
    parse_map,
    parse_memory_size,
)

T = TypeVar("T")
Parser = Callable[[str], T]

# What a DNS-1123 subdomain (most object names) may hold, for messages.
OBJECT_NAME_CHARACTERS = "lowercase letters, digits, '-' and '.'"

_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


# ---------------------------------------------------------------------------- text


def text(raw: str) -> str:
    """The value, stripped."""
    return raw.strip()


def optional_text(raw: str) -> str | None:
    """The value, stripped; blank is None (unset)."""
    return raw.strip() or None


def optional_path(raw: str) -> Path | None:
    """A file path, ``~`` expanded; blank is None (unset)."""
    stripped = raw.strip()
    return Path(stripped).expanduser() if stripped else None


def non_empty_text(*, expected: str) -> Parser[str]:
    """The value, stripped, which must not be empty: ``is empty; expected <expected>``."""

    def parse(raw: str) -> str:
        value = raw.strip()
        if not value:
            raise ValueError(f"is empty; expected {expected}")
        return value

    return parse


def choice(
    choices: Sequence[str], *, what: str, aliases: Mapping[str, str] | None = None
) -> Parser[str]:
    """One of ``choices`` (any case), returned as spelt in ``choices``."""
    by_lower = {option.lower(): option for option in choices}
    for alias, target in (aliases or {}).items():
        by_lower[alias.lower()] = target

    def parse(raw: str) -> str:
        found = by_lower.get(raw.strip().lower())
        if found is None:
            raise ValueError(f"'{raw}' is not {what}; expected one of {', '.join(choices)}")
        return found

    return parse


def require_name(name: str, *, rule: Callable[[str], bool], kind: str, expected: str) -> str:
    """``name`` when ``rule`` accepts it (a rule of :mod:`rmd.config.names`), else an error
    ``'<name>' is not a valid <kind> name; expected <expected>``."""
    if not rule(name):
        raise ValueError(f"'{name}' is not a valid {kind} name; expected {expected}")
    return name


# ---------------------------------------------------------------------------- numbers


def integer(*, min_value: int | None = None, max_value: int | None = None) -> Parser[int]:
    """A whole number (an optional sign, ASCII digits), within the bounds given."""

    def parse(raw: str) -> int:
        stripped = raw.strip()
        body = stripped[1:] if stripped[:1] in "+-" else stripped
        if not (body.isascii() and body.isdigit()):
            raise ValueError(f"'{raw}' is not an integer; expected a whole number")
        value = int(stripped)
        check_range(raw, value, min_value=min_value, max_value=max_value)
        return value

    return parse


def number(*, min_value: float | None = None) -> Parser[float]:
    """A decimal number (``2``, ``0.5``, ``1e3``; not nan or inf), at least ``min_value``."""

    def parse(raw: str) -> float:
        stripped = raw.strip()
        if _DECIMAL.fullmatch(stripped) is None:
            raise ValueError(f"'{raw}' is not a number; expected e.g. 2 or 0.5")
        value = float(stripped)
        check_range(raw, value, min_value=min_value, max_value=None)
        return value

    return parse


def positive_number(*, expected: str) -> Parser[float]:
    """A number > 0: ``'<raw>' is not positive; expected <expected>``."""
    parse_number = number()

    def parse(raw: str) -> float:
        value = parse_number(raw)
        if value <= 0:
            raise ValueError(f"'{raw}' is not positive; expected {expected}")
        return value

    return parse


def check_range(
    raw: str, value: float, *, min_value: float | None, max_value: float | None
) -> None:
    if min_value is not None and value < min_value:
        raise ValueError(f"'{raw.strip()}' is too small; expected a value >= {min_value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"'{raw.strip()}' is too large; expected a value <= {max_value}")


def boolean(raw: str) -> bool:
    return parse_bool(raw)


def duration(*, default_unit: str = "ms") -> Parser[float]:
    """Seconds. A bare number is in ``default_unit`` (Flink: milliseconds)."""

    def parse(raw: str) -> float:
        return parse_duration(raw, default_unit=default_unit)

    return parse


def positive_duration(raw: str) -> float:
    """Seconds, more than zero; a bare number is in milliseconds."""
    value = parse_duration(raw, default_unit="ms")
    if value <= 0:
        raise ValueError(f"'{raw}' is zero; expected a positive duration, e.g. '30 s'")
    return value


def memory_size(*, default_unit: str = "b") -> Parser[int]:
    """Bytes (binary units: 1k = 1024). A bare number is in ``default_unit``."""

    def parse(raw: str) -> int:
        return parse_memory_size(raw, default_unit=default_unit)

    return parse


# ---------------------------------------------------------------------------- lists and maps


def text_list(*, separator: str = ";") -> Parser[list[str]]:
    """``a;b;c``: items stripped, empty items dropped."""

    def parse(raw: str) -> list[str]:
        return parse_list(raw, separator=separator)

    return parse


def names_list(raw: str) -> list[str]:
    """``a;b;a``: the distinct non-empty items, in order."""
    return list(dict.fromkeys(parse_list(raw)))


def list_of_maps(raw: str, *, what: str, example: str) -> list[dict[str, str]]:
    """``k1:v1,k2:v2;k1:v3`` (Flink's list of maps) → one dict per item, names lower-cased."""
    items: list[dict[str, str]] = []
    for item in parse_list(raw):
        try:
            parsed = parse_map(item)
        except ValueError as error:
            raise ValueError(f"{error}; separate {what}s with ';', e.g. {example}") from None
        items.append({name.lower(): value for name, value in parsed.items()})
    return items


def show_entry(item: Mapping[str, str]) -> str:
    """One entry of a list of maps as the user wrote it, quoted for a message."""
    return repr(",".join(f"{name}:{value}" for name, value in item.items()))


def stripped_map(entries: Mapping[str, str]) -> dict[str, str]:
    return {name.strip(): value.strip() for name, value in entries.items()}
