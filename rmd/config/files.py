"""Where Flink's configuration comes from: the configuration directory and ``-D``.

* ``config.yaml`` — standard YAML (Flink >= 1.19). Nested maps flatten to dotted keys
  (``kubernetes: {cluster-id: x}`` → ``kubernetes.cluster-id``); scalars keep the text as
  written (``true``, ``010``, ``1.0``); lists become ``;``-joined strings; a map inside a
  list becomes ``k1:v1,k2:v2`` (how Flink writes list-of-map options).
* ``flink-conf.yaml`` — the legacy flat format: one ``key: value`` per line (split at the
  first ``': '``), ``#`` starts a comment, lines that are not ``key: value`` are skipped with
  a warning, as Flink skips them. A value wrapped in matching quotes loses them.

When a directory holds both, ``config.yaml`` is used and ``flink-conf.yaml`` is ignored
(with a warning). That is Flink 2.x's behaviour (it no longer reads ``flink-conf.yaml``);
note that Flink 1.19/1.20 instead prefer a ``flink-conf.yaml`` they find — keep just one
file to avoid surprises.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from rmd.config.errors import ConfigError

CONFIG_YAML = "config.yaml"
LEGACY_FLINK_CONF_YAML = "flink-conf.yaml"
CONF_DIR_ENV = "FLINK_CONF_DIR"


@dataclass(frozen=True)
class ConfDirContents:
    """What a configuration directory held: values, the file each came from, warnings."""

    values: dict[str, str]
    origins: dict[str, str]
    warnings: tuple[str, ...]


def read_conf_dir(conf_dir: Path | None, environ: Mapping[str, str]) -> ConfDirContents:
    """Read ``config.yaml`` (or ``flink-conf.yaml``) from the configuration directory.

    ``conf_dir`` None → ``$FLINK_CONF_DIR``, then ``./conf``; when neither was named
    explicitly a missing directory or file is an empty configuration. An explicit
    ``conf_dir`` (or ``$FLINK_CONF_DIR``) that does not exist is a ConfigError.
    """
    directory, explicit = _resolve_conf_dir(conf_dir, environ)
    warnings: list[str] = []
    if directory.is_dir():
        values, origins = _read_conf_dir(directory, warnings)
        return ConfDirContents(values, origins, tuple(warnings))
    if explicit is not None:
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise ConfigError(
            f"configuration directory '{directory}' ({explicit}) {problem}; "
            "point it at the directory that holds config.yaml or flink-conf.yaml"
        )
    return ConfDirContents({}, {}, ())


# ---------------------------------------------------------------------- -D overrides


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` → ``{"a": "1", "b": "x=y"}``; split at the first ``=``.

    The result is in the order the keys were last given (which alias was given last matters).
    """
    parsed: dict[str, str] = {}
    for argument in overrides:
        text = argument[2:] if argument.startswith("-D") else argument
        key, equals, value = text.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ConfigError(
                f"-D '{argument}' is not key=value; write e.g. -D kubernetes.cluster-id=my-flink"
            )
        parsed.pop(key, None)  # a key given twice counts where it was given last
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
