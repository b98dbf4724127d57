"""One configuration key with everything known about it: Flink's ``ConfigOption`` idea.

An option names its key, its parser, its default (written in Flink's syntax, so the README
shows it as a user would write it), its older names and the more general options it falls
back to, and what it means. :mod:`rmd.config.options` holds the table of all of them;
:meth:`rmd.config.flinkconf.FlinkConfiguration.get` reads one.

Two kinds of other keys, as in Flink:

* ``deprecated_keys`` are older names of the same option. When several are set, the one
  given last wins (``-D`` over the file; within one source the current name), and a warning
  names them all.
* ``fallback_keys`` are more general options (``kubernetes.service-account`` for the
  TaskManager's service account), read in order only when no name of this option is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

T = TypeVar("T")

# A key family (``containerized.taskmanager.env.<name>``) has this where the name goes.
NAME_PLACEHOLDER = "<name>"


@dataclass(frozen=True, kw_only=True)
class OptionKey:
    """The names and the meaning of an option; what the README's table shows."""

    key: str
    meaning: str
    deprecated_keys: tuple[str, ...] = ()
    fallback_keys: tuple[str, ...] = ()
    default_note: str = "unset"  # the README's default column, when there is no fixed default

    @property
    def aliases(self) -> tuple[str, ...]:
        """The key and its older names: one option, whichever name is used."""
        return (self.key, *self.deprecated_keys)

    @property
    def all_keys(self) -> tuple[str, ...]:
        return (*self.aliases, *self.fallback_keys)

    @property
    def is_family(self) -> bool:
        """A family of keys, one per name: ``containerized.taskmanager.env.<name>``."""
        return NAME_PLACEHOLDER in self.key

    @property
    def family_prefix(self) -> str:
        """``containerized.taskmanager.env.`` for ``containerized.taskmanager.env.<name>``."""
        return self.key.partition(NAME_PLACEHOLDER)[0]

    def shown_default(self) -> str:
        """The README's default column."""
        return self.default_note


@dataclass(frozen=True, kw_only=True)
class ConfigOption(OptionKey, Generic[T]):
    """A key with one value, parsed from its text by ``parse`` (which raises ValueError)."""

    parse: Callable[[str], T]
    default: str | None = None  # in Flink's syntax, parsed by ``parse``; None: no default

    def default_value(self) -> T:
        """The default, parsed; a LookupError for an option without one."""
        if self.default is None:
            raise LookupError(f"{self.key} has no default; read it with get_optional()")
        return self.parse(self.default)

    def shown_default(self) -> str:
        return f"`{self.default}`" if self.default is not None else self.default_note

    def for_name(self, name: str) -> ConfigOption[T]:
        """The option of one member of a key family, e.g. ``...env.JAVA_HOME``."""
        return replace(self, key=self.key.replace(NAME_PLACEHOLDER, name))


@dataclass(frozen=True, kw_only=True)
class MapOption(OptionKey, Generic[T]):
    """A map-valued key: ``k1:v1,k2:v2`` in the key itself or, when the key is not set, one
    key per entry under it (``<key>.k1: v1``, what a nested YAML map flattens to), as Flink
    reads maps. ``check`` turns the entries into the value (or raises ValueError)."""

    check: Callable[[dict[str, str]], T]
    default_note: str = "none"
