"""Flink's configuration, as Flink users write it: flat dotted keys with string values.

:class:`FlinkConfiguration` holds ``key -> raw text`` and parses a value only when asked,
with Flink's syntax (:mod:`rmd.core.values`). Every bad value becomes a :class:`ConfigError`
whose one-line message names the key, the value, where it was set, and what is expected.

Files (read only by :meth:`FlinkConfiguration.load`):

* ``config.yaml`` — standard YAML (Flink >= 1.19). Nested maps flatten to dotted keys
  (``kubernetes: {cluster-id: x}`` → ``kubernetes.cluster-id``); scalars keep the text as
  written (``true``, ``010``, ``1.0``); lists become ``;``-joined strings; a map inside a
  list becomes ``k1:v1,k2:v2`` (how Flink writes list-of-map options).
* ``flink-conf.yaml`` — the legacy flat format: one ``key: value`` per line (split at the
  first ``': '``), ``#`` starts a comment, lines that are not ``key: value`` are skipped with
  a warning, as Flink skips them. A value wrapped in matching quotes loses them.

When a directory holds both, ``config.yaml`` is used and ``flink-conf.yaml`` is ignored
(with a warning in :attr:`FlinkConfiguration.warnings`). That is Flink 2.x's behaviour (it no
longer reads ``flink-conf.yaml``); note that Flink 1.19/1.20 instead prefer a
``flink-conf.yaml`` they find — keep just one file to avoid surprises.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import yaml

from rmd.core.values import (
    parse_bool,
    parse_duration,
    parse_list,
    parse_map,
    parse_memory_size,
)

CONFIG_YAML = "config.yaml"
LEGACY_FLINK_CONF_YAML = "flink-conf.yaml"
CONF_DIR_ENV = "FLINK_CONF_DIR"
OVERRIDE_ORIGIN = "-D"


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
        # Where each key was set (a file path, or "-D"); used in error messages only.
        self._origins: dict[str, str] = {
            key: origin for key, origin in (origins or {}).items() if key in self._values
        }
        self.warnings: tuple[str, ...] = tuple(warnings)

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

        ``conf_dir`` None → ``$FLINK_CONF_DIR``, then ``./conf``; when neither was named
        explicitly a missing directory or file is an empty configuration. An explicit
        ``conf_dir`` (or ``$FLINK_CONF_DIR``) that does not exist is a ConfigError.
        Each override is ``key=value`` (a leading ``-D`` is tolerated); they win over the file.
        ``environ`` defaults to ``os.environ``.
        """
        environment = os.environ if environ is None else environ
        directory, explicit = _resolve_conf_dir(conf_dir, environment)
        warnings: list[str] = []
        values: dict[str, str] = {}
        origins: dict[str, str] = {}
        if directory.is_dir():
            values, origins = _read_conf_dir(directory, warnings)
        elif explicit is not None:
            problem = "is not a directory" if directory.exists() else "does not exist"
            raise ConfigError(
                f"configuration directory '{directory}' ({explicit}) {problem}; "
                "point it at the directory that holds config.yaml or flink-conf.yaml"
            )
        loaded = cls(values, origins=origins, warnings=warnings)
        return loaded.with_overrides(parse_overrides(overrides))

    def with_overrides(self, overrides: Mapping[str, str]) -> FlinkConfiguration:
        """A copy with ``overrides`` set on top (as ``-D`` does)."""
        values = {**self._values, **overrides}
        origins = {**self._origins, **dict.fromkeys(overrides, OVERRIDE_ORIGIN)}
        return FlinkConfiguration(values, origins=origins, warnings=self.warnings)

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

    # ------------------------------------------------------------------ typed access

    def get_str(
        self, key: str, default: str | None = None, *, fallback_keys: Sequence[str] = ()
    ) -> str | None:
        """The value of ``key`` (or the first of ``fallback_keys`` that is set), stripped."""
        found = self._find(key, fallback_keys)
        return default if found is None else found[1].strip()

    def get_int(
        self,
        key: str,
        default: int | None,
        *,
        min_value: int | None = None,
        max_value: int | None = None,
        fallback_keys: Sequence[str] = (),
    ) -> int | None:
        found = self._find(key, fallback_keys)
        if found is None:
            return default
        used_key, text = found
        stripped = text.strip()
        if not _is_integer(stripped):
            raise self._invalid(used_key, f"'{text}' is not an integer; expected a whole number")
        value = int(stripped)
        _check_range(self, used_key, text, value, min_value=min_value, max_value=max_value)
        return value

    def get_float(
        self,
        key: str,
        default: float | None,
        *,
        min_value: float | None = None,
        fallback_keys: Sequence[str] = (),
    ) -> float | None:
        found = self._find(key, fallback_keys)
        if found is None:
            return default
        used_key, text = found
        stripped = text.strip()
        if not _is_decimal(stripped):
            raise self._invalid(used_key, f"'{text}' is not a number; expected e.g. 2 or 0.5")
        value = float(stripped)
        _check_range(self, used_key, text, value, min_value=min_value, max_value=None)
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        text = self.raw(key)
        if text is None:
            return default
        try:
            return parse_bool(text)
        except ValueError as error:
            raise self._invalid(key, str(error)) from None

    def get_duration(
        self,
        key: str,
        default: float | None,
        *,
        default_unit: str = "ms",
        fallback_keys: Sequence[str] = (),
    ) -> float | None:
        """Seconds. A bare number is in ``default_unit`` (Flink: milliseconds)."""
        found = self._find(key, fallback_keys)
        if found is None:
            return default
        used_key, text = found
        try:
            return parse_duration(text, default_unit=default_unit)
        except ValueError as error:
            raise self._invalid(used_key, str(error)) from None

    def get_memory(self, key: str, default: int | None, *, default_unit: str = "b") -> int | None:
        """Bytes (binary units: 1k = 1024)."""
        text = self.raw(key)
        if text is None:
            return default
        try:
            return parse_memory_size(text, default_unit=default_unit)
        except ValueError as error:
            raise self._invalid(key, str(error)) from None

    def get_list(self, key: str, default: Sequence[str] = (), *, separator: str = ";") -> list[str]:
        text = self.raw(key)
        if text is None:
            return list(default)
        try:
            return parse_list(text, separator=separator)
        except ValueError as error:
            raise self._invalid(key, str(error)) from None

    def get_map(self, key: str, default: Mapping[str, str] | None = None) -> dict[str, str]:
        """``key: k1:v1,k2:v2``, or — when ``key`` itself is not set — prefixed keys
        ``key.k1: v1`` (what a nested YAML map under ``key`` flattens to), as Flink does."""
        text = self.raw(key)
        if text is not None:
            try:
                return parse_map(text)
            except ValueError as error:
                raise self._invalid(key, str(error)) from None
        prefixed = self.with_prefix(key + ".")
        if prefixed:
            return prefixed
        return dict(default or {})

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """Every key starting with ``prefix``, the prefix cut off: the remainder → raw value."""
        return {
            key[len(prefix) :]: value
            for key, value in sorted(self._values.items())
            if key.startswith(prefix) and len(key) > len(prefix)
        }

    # ------------------------------------------------------------------ helpers

    def _find(self, key: str, fallback_keys: Sequence[str]) -> tuple[str, str] | None:
        for candidate in (key, *fallback_keys):
            text = self._values.get(candidate)
            if text is not None:
                return candidate, text
        return None

    def invalid(self, key: str, problem: str) -> ConfigError:
        """A ConfigError for ``key``: ``"<key>: <problem> (set in <origin>)"``."""
        return self._invalid(key, problem)

    def _invalid(self, key: str, problem: str) -> ConfigError:
        origin = self._origins.get(key)
        where = ""
        if origin == OVERRIDE_ORIGIN:
            where = " (set with -D)"
        elif origin is not None:
            where = f" (set in {origin})"
        return ConfigError(f"{key}: {problem}{where}", key=key)


# ---------------------------------------------------------------------- numbers


_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def _is_integer(text: str) -> bool:
    body = text[1:] if text[:1] in "+-" else text
    return body.isascii() and body.isdigit()


def _is_decimal(text: str) -> bool:
    return _DECIMAL.fullmatch(text) is not None


def _check_range(
    conf: FlinkConfiguration,
    key: str,
    text: str,
    value: float,
    *,
    min_value: float | None,
    max_value: float | None,
) -> None:
    if min_value is not None and value < min_value:
        raise conf.invalid(key, f"'{text.strip()}' is too small; expected a value >= {min_value}")
    if max_value is not None and value > max_value:
        raise conf.invalid(key, f"'{text.strip()}' is too large; expected a value <= {max_value}")


# ---------------------------------------------------------------------- -D overrides


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` → ``{"a": "1", "b": "x=y"}``; split at the first ``=``."""
    parsed: dict[str, str] = {}
    for argument in overrides:
        text = argument[2:] if argument.startswith("-D") else argument
        key, equals, value = text.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ConfigError(
                f"-D '{argument}' is not key=value; write e.g. -D kubernetes.cluster-id=my-flink"
            )
        parsed[key] = value.strip()
    return parsed


# ---------------------------------------------------------------------- files


def configuration_directory(
    conf_dir: Path | None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """The directory :meth:`FlinkConfiguration.load` reads for ``conf_dir`` (it may not exist)."""
    return _resolve_conf_dir(conf_dir, os.environ if environ is None else environ)[0]


def _resolve_conf_dir(conf_dir: Path | None, environ: Mapping[str, str]) -> tuple[Path, str | None]:
    """The directory to read, and how it was named explicitly (None: the ./conf default)."""
    if conf_dir is not None:
        return conf_dir, "--conf-dir"
    from_env = environ.get(CONF_DIR_ENV, "").strip()
    if from_env:
        return Path(from_env), f"${CONF_DIR_ENV}"
    return Path("conf"), None


def _read_conf_dir(directory: Path, warnings: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The values in ``directory``'s configuration file, and the file each came from."""
    standard = directory / CONFIG_YAML
    legacy = directory / LEGACY_FLINK_CONF_YAML
    if standard.is_file():
        if legacy.is_file():
            warnings.append(
                f"{legacy} is ignored because {standard} exists "
                "(Flink 2.x reads only config.yaml); keep one of them"
            )
        values = parse_config_yaml(_read_text(standard), source=str(standard))
        return values, dict.fromkeys(values, str(standard))
    if legacy.is_file():
        values = parse_legacy_flink_conf(_read_text(legacy), source=str(legacy), warnings=warnings)
        return values, dict.fromkeys(values, str(legacy))
    return {}, {}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error}); check the file") from None


class _TextScalarLoader(yaml.SafeLoader):
    """Safe YAML loading that keeps numbers, booleans and dates as the text written."""


def _scalar_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


for _tag in ("int", "float", "bool", "timestamp"):
    _TextScalarLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _scalar_text)


def parse_config_yaml(text: str, *, source: str = CONFIG_YAML) -> dict[str, str]:
    """Flatten a standard-YAML ``config.yaml`` into dotted keys with string values."""
    try:
        document = yaml.load(text, Loader=_TextScalarLoader)
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_error_message(error, source)) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: the top level is a {type(document).__name__}, not a map; "
            "write 'key: value' lines, e.g. 'kubernetes.cluster-id: my-flink'"
        )
    flat: dict[str, str] = {}
    _flatten(document, prefix="", into=flat, source=source)
    return flat


def _yaml_error_message(error: yaml.YAMLError, source: str) -> str:
    where = source
    problem = str(error).replace("\n", " ")
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            where = f"{source} line {mark.line + 1}, column {mark.column + 1}"
        problem = " ".join(part for part in (error.context, error.problem) if part)
    return f"{where}: invalid YAML: {problem}; fix the syntax (indent with spaces, 'key: value')"


def _flatten(
    node: Mapping[object, object], *, prefix: str, into: dict[str, str], source: str
) -> None:
    for raw_key, value in node.items():
        key = prefix + str(raw_key)
        if isinstance(value, dict):
            _flatten(value, prefix=key + ".", into=into, source=source)
        elif isinstance(value, list):
            into[key] = ";".join(_list_item_text(item, key=key, source=source) for item in value)
        elif value is None:
            continue  # "key:" with no value: unset, as in Flink
        else:
            into[key] = str(value)


def _list_item_text(item: object, *, key: str, source: str) -> str:
    if isinstance(item, dict):
        text = ",".join(
            f"{_quote(str(k), ',:')}:{_quote(_scalar(v, key=key, source=source), ',:')}"
            for k, v in item.items()
        )
    else:
        text = _scalar(item, key=key, source=source)
    return _quote(text, ";")


def _scalar(value: object, *, key: str, source: str) -> str:
    if isinstance(value, dict | list):
        raise ConfigError(
            f"{key}: lists and maps nested inside a list are not supported ({source}); "
            "write the list items as plain values or as one-level maps",
            key=key,
        )
    return "" if value is None else str(value)


def _quote(text: str, special: str) -> str:
    """Single-quote ``text`` when it holds a special character or a quote (Flink's escaping)."""
    if any(char in text for char in special + "'\""):
        return "'" + text.replace("'", "''") + "'"
    return text


def parse_legacy_flink_conf(
    text: str, *, source: str = LEGACY_FLINK_CONF_YAML, warnings: list[str] | None = None
) -> dict[str, str]:
    """Parse the legacy flat ``flink-conf.yaml`` as Flink does (not as YAML)."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        key, separator, value = content.partition(": ")
        key, value = key.strip(), value.strip()
        if not separator or not key or not value:
            if warnings is not None:
                warnings.append(
                    f"{source} line {number}: '{content}' is not 'key: value' "
                    "(a space must follow the colon); the line is ignored"
                )
            continue
        values[key] = _unquote(value)
    return values


def _unquote(value: str) -> str:
    """``"x"`` / ``'x'`` → ``x``: what a YAML reader sees (Flink's legacy parser keeps the
    quotes, which only ever breaks the value, e.g. an image name)."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
