"""Flink's configuration, as Flink users write it: flat dotted keys with string values.

:class:`FlinkConfiguration` holds ``key -> raw text`` and parses a value only when asked:
:meth:`FlinkConfiguration.get` reads an option of the table (:mod:`rmd.config.options`),
the ``get_*`` methods read a key by name. Every bad value becomes a :class:`ConfigError`
whose one-line message names the key, the value, where it was set, and what is expected.

Each key remembers when it was given: the files first, then each ``-D`` in order. An option
set under two of its names (``kubernetes.container.image`` and its successor
``kubernetes.container.image.ref``) takes the value given last — within one source, the
current name's — and :attr:`FlinkConfiguration.warnings` names both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from rmd.config import parsers
from rmd.config.errors import ConfigError
from rmd.config.files import parse_overrides, read_conf_dir
from rmd.config.option import ConfigOption, MapOption, OptionKey
from rmd.config.options import OPTIONS
from rmd.config.values import parse_map

__all__ = ["OVERRIDE_ORIGIN", "ConfigError", "FlinkConfiguration"]

OVERRIDE_ORIGIN = "-D"

T = TypeVar("T")  # a value
D = TypeVar("D")  # a default
R = TypeVar("R")  # what a parser reads: the text, or a map's entries


class FlinkConfiguration:
    """Flat Flink configuration: dotted keys mapped to the raw text of their values."""

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        *,
        origins: Mapping[str, str] | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        self._values: dict[str, str] = dict(values or {})
        # Where each key was set (a file path, or "-D"); used in messages only.
        self._origins: dict[str, str] = {
            key: origin for key, origin in (origins or {}).items() if key in self._values
        }
        # When each key was given: 0 for these values, then one more per -D, in order.
        self._layers: dict[str, int] = dict.fromkeys(self._values, 0)
        self._file_warnings: tuple[str, ...] = tuple(warnings)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        *,
        conf_dir: Path | None,
        overrides: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> FlinkConfiguration:
        """Read ``config.yaml`` (or ``flink-conf.yaml``) from a directory, then apply ``-D``s.

        ``conf_dir`` None → ``$FLINK_CONF_DIR``, then ``./conf`` (see
        :func:`rmd.config.files.read_conf_dir`). Each override is ``key=value`` (a leading
        ``-D`` is tolerated); they win over the file. ``environ`` defaults to ``os.environ``.
        """
        contents = read_conf_dir(conf_dir, os.environ if environ is None else environ)
        loaded = cls(contents.values, origins=contents.origins, warnings=contents.warnings)
        return loaded.with_overrides(parse_overrides(overrides))

    def with_overrides(self, overrides: Mapping[str, str]) -> FlinkConfiguration:
        """A copy with ``overrides`` set on top (as ``-D`` does), each given after the last."""
        result = FlinkConfiguration(
            {**self._values, **overrides},
            origins={**self._origins, **dict.fromkeys(overrides, OVERRIDE_ORIGIN)},
            warnings=self._file_warnings,
        )
        last = max(self._layers.values(), default=0)
        result._layers = {**self._layers}
        for offset, key in enumerate(overrides, start=1):
            result._layers[key] = last + offset
        return result

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems that do not stop start-up: ignored files and lines, options set twice."""
        return self._file_warnings + tuple(self._alias_warnings())

    # ------------------------------------------------------------------ raw access

    def keys(self) -> list[str]:
        return sorted(self._values)

    def raw(self, key: str) -> str | None:
        return self._values.get(key)

    def origin(self, key: str) -> str | None:
        """Where ``key`` was set: a file path, ``"-D"``, or None (given in code / unset)."""
        return self._origins.get(key)

    def as_dict(self) -> dict[str, str]:
        return dict(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FlinkConfiguration):
            return NotImplemented
        return self._values == other._values

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value: not hashable

    def __repr__(self) -> str:
        return f"FlinkConfiguration({self._values!r})"

    # ------------------------------------------------------------------ options

    def get(self, option: ConfigOption[T] | MapOption[T]) -> T:
        """The option's value: its text parsed, or its default parsed when it is not set."""
        if isinstance(option, MapOption):
            return self._parsed(option.key, self.get_map(option.key), option.check)
        found = self._find(_key_groups(option))
        if found is not None:
            return self._parsed(*found, option.parse)
        return option.default_value()

    def get_optional(self, option: ConfigOption[T]) -> T | None:
        """The option's value, or None when none of its keys is set (the default unused)."""
        found = self._find(_key_groups(option))
        return None if found is None else self._parsed(*found, option.parse)

    def key_used(self, option: OptionKey) -> str | None:
        """The key the option's value is read from, or None when none of its keys is set."""
        found = self._find(_key_groups(option))
        return None if found is None else found[0]

    def is_set(self, option: OptionKey) -> bool:
        """Whether any of the option's keys (older names, fallbacks) is set."""
        return any(key in self._values for key in option.all_keys)

    # ------------------------------------------------------------------ keys by name

    def get_str(
        self, key: str, default: str | None = None, *, fallback_keys: Sequence[str] = ()
    ) -> str | None:
        """The value of ``key`` (or the first of ``fallback_keys`` that is set), stripped."""
        return self._read(key, fallback_keys, default, parsers.text)

    def get_int(
        self,
        key: str,
        default: int | None,
        *,
        min_value: int | None = None,
        max_value: int | None = None,
        fallback_keys: Sequence[str] = (),
    ) -> int | None:
        parse = parsers.integer(min_value=min_value, max_value=max_value)
        return self._read(key, fallback_keys, default, parse)

    def get_float(
        self,
        key: str,
        default: float | None,
        *,
        min_value: float | None = None,
        fallback_keys: Sequence[str] = (),
    ) -> float | None:
        return self._read(key, fallback_keys, default, parsers.number(min_value=min_value))

    def get_bool(self, key: str, default: bool) -> bool:
        return self._read(key, (), default, parsers.boolean)

    def get_duration(
        self,
        key: str,
        default: float | None,
        *,
        default_unit: str = "ms",
        fallback_keys: Sequence[str] = (),
    ) -> float | None:
        """Seconds. A bare number is in ``default_unit`` (Flink: milliseconds)."""
        parse = parsers.duration(default_unit=default_unit)
        return self._read(key, fallback_keys, default, parse)

    def get_memory(self, key: str, default: int | None, *, default_unit: str = "b") -> int | None:
        """Bytes (binary units: 1k = 1024)."""
        return self._read(key, (), default, parsers.memory_size(default_unit=default_unit))

    def get_list(self, key: str, default: Sequence[str] = (), *, separator: str = ";") -> list[str]:
        return self._read(key, (), list(default), parsers.text_list(separator=separator))

    def get_map(self, key: str, default: Mapping[str, str] | None = None) -> dict[str, str]:
        """``key: k1:v1,k2:v2``, or — when ``key`` itself is not set — prefixed keys
        ``key.k1: v1`` (what a nested YAML map under ``key`` flattens to), as Flink does."""
        inline = self._read(key, (), None, parse_map)
        if inline is not None:
            return inline
        return self.with_prefix(key + ".") or dict(default or {})

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """Every key starting with ``prefix``, the prefix cut off: the remainder → raw value."""
        return {
            key[len(prefix) :]: value
            for key, value in sorted(self._values.items())
            if key.startswith(prefix) and len(key) > len(prefix)
        }

    # ------------------------------------------------------------------ errors

    def invalid(self, key: str, problem: str) -> ConfigError:
        """A ConfigError for ``key``: ``"<key>: <problem> (set in <origin>)"``."""
        where = self._where(key)
        suffix = f" ({where})" if where else ""
        return ConfigError(f"{key}: {problem}{suffix}", key=key)

    # ------------------------------------------------------------------ helpers

    def _read(
        self, key: str, fallback_keys: Sequence[str], default: D, parse: Callable[[str], T]
    ) -> T | D:
        found = self._find([(key,), *((fallback,) for fallback in fallback_keys)])
        return default if found is None else self._parsed(*found, parse)

    def _parsed(self, key: str, raw: R, parse: Callable[[R], T]) -> T:
        try:
            return parse(raw)
        except ValueError as error:
            raise self.invalid(key, str(error)) from None

    def _find(self, key_groups: Sequence[Sequence[str]]) -> tuple[str, str] | None:
        """The key to read and its text: the first group with a key set; within a group
        (one option's names), the key given last, the first named on a tie."""
        for group in key_groups:
            given = [key for key in group if key in self._values]
            if given:
                used = max(given, key=self._layers.__getitem__)
                return used, self._values[used]
        return None

    def _where(self, key: str) -> str:
        origin = self._origins.get(key)
        if origin == OVERRIDE_ORIGIN:
            return "set with -D"
        return "" if origin is None else f"set in {origin}"

    def _alias_warnings(self) -> Iterator[str]:
        for option in OPTIONS:
            given = [key for key in option.aliases if key in self._values]
            if len(given) < 2:
                continue
            found = self._find([given])
            assert found is not None
            used, value = found
            if all(self._layers[used] > self._layers[key] for key in given if key != used):
                why = "given last"
            else:
                why = "the current name" if used == option.key else "named first"
            names = " and ".join(self._described(key) for key in given)
            yield (
                f"{names} name the same option; using {used} = '{value}' ({why}); keep one of them"
            )

    def _described(self, key: str) -> str:
        """``key (set in <file>)``, ``key (set with -D)``, or just ``key``."""
        where = self._where(key)
        return f"{key} ({where})" if where else key


def _key_groups(option: OptionKey) -> list[tuple[str, ...]]:
    """The option's names (one group), then each fallback key (a group of its own)."""
    return [option.aliases, *((fallback,) for fallback in option.fallback_keys)]
