"""What runs in a TaskManager container and what it sees: entry point and arguments,
environment variables, Secrets as variables and as mounted files.

Parsers of single values (raising ValueError, see :mod:`rmd.config.parsers`), in Flink's
syntax (``KubernetesConfigOptions``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from rmd.config.names import is_dns1123_subdomain, is_env_var_name
from rmd.config.parsers import (
    OBJECT_NAME_CHARACTERS,
    list_of_maps,
    require_name,
    show_entry,
    stripped_map,
)

DEFAULT_ENTRY_PATH = "/docker-entrypoint.sh"
DEFAULT_CONF_DIR = "/opt/flink/conf"  # where the flink-config-<cluster-id> ConfigMap is mounted
SECRET_ENV_EXAMPLE = "env:FOO_ENV,secret:foo_secret,key:foo_key"
_SECRET_ENV_FIELDS = ("env", "secret", "key")


@dataclass(frozen=True, kw_only=True)
class SecretEnv:
    """One entry of ``kubernetes.env.secretKeyRef``: env var ``env`` = ``secret``'s ``key``."""

    env: str
    secret: str
    key: str


@dataclass(frozen=True, kw_only=True)
class SecretMount:
    """One entry of ``kubernetes.secrets``: mount ``secret`` at ``mount_path``."""

    secret: str
    mount_path: str

    @property
    def volume_name(self) -> str:
        return f"{self.secret}-volume"  # Flink's name for the volume


def entry_path(raw: str) -> str:
    """``kubernetes.entry.path``: the image's entrypoint script."""
    path = raw.strip()
    if not path:
        raise ValueError(
            f"is empty; set the image's entrypoint script (default {DEFAULT_ENTRY_PATH})"
        )
    return path


def conf_dir(raw: str) -> str:
    """``kubernetes.flink.conf.dir``: where the Flink configuration is mounted."""
    value = raw.strip()
    if not value.startswith("/"):
        raise ValueError(
            f"{value!r} is not an absolute path; set where the Flink configuration is mounted in "
            f"the "
            f"TaskManager container (default {DEFAULT_CONF_DIR})"
        )
    return value.rstrip("/") or "/"


def entrypoint_args(raw: str) -> tuple[str, ...]:
    """``kubernetes.taskmanager.entrypoint.args``: split as a shell would."""
    try:
        return tuple(shlex.split(raw))
    except ValueError as error:
        raise ValueError(
            f"{raw!r} cannot be split into arguments ({error}); close the quotes"
        ) from None


def check_env_var_name(name: str) -> str:
    if not is_env_var_name(name):
        raise ValueError(
            f"{name!r} is not an environment variable name; use letters, digits, '_', '-' "
            "and '.', not starting with a digit"
        )
    return name


def secret_env(raw: str) -> tuple[SecretEnv, ...]:
    """``kubernetes.env.secretKeyRef``: ``env:FOO,secret:s,key:k;...``."""
    entries: list[SecretEnv] = []
    for item in list_of_maps(raw, what="secret reference", example=SECRET_ENV_EXAMPLE):
        missing = [part for part in _SECRET_ENV_FIELDS if not item.get(part)]
        if missing:
            raise ValueError(
                f"entry {show_entry(item)} lacks {', '.join(missing)}; every entry needs env, "
                f"secret and key, e.g. {SECRET_ENV_EXAMPLE}"
            )
        unknown = sorted(set(item) - set(_SECRET_ENV_FIELDS))
        if unknown:
            raise ValueError(
                f"entry {show_entry(item)} has unknown field(s) {', '.join(unknown)}; "
                f"use only env, secret and key, e.g. {SECRET_ENV_EXAMPLE}"
            )
        entries.append(
            SecretEnv(
                env=check_env_var_name(item["env"]),
                secret=_secret_name(item["secret"], example=SECRET_ENV_EXAMPLE),
                key=item["key"],
            )
        )
    return tuple(entries)


def secret_mounts(entries: Mapping[str, str]) -> tuple[SecretMount, ...]:
    """``kubernetes.secrets``: ``secret:/mount/path,...``."""
    example = "foo:/opt/secrets-foo"
    mounts: list[SecretMount] = []
    for secret, path in stripped_map(entries).items():
        _secret_name(secret, example=example)
        if not path.startswith("/"):
            raise ValueError(
                f"mount path {path!r} of secret {secret!r} is not absolute; write it like {example}"
            )
        mounts.append(SecretMount(secret=secret, mount_path=path))
    if len({mount.mount_path for mount in mounts}) != len(mounts):
        raise ValueError("two secrets share one mount path; give each its own")
    return tuple(mounts)


def _secret_name(name: str, *, example: str) -> str:
    return require_name(
        name,
        rule=is_dns1123_subdomain,
        kind="Secret",
        expected=f"{OBJECT_NAME_CHARACTERS}, e.g. {example}",
    )
