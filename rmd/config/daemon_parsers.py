"""Parsers of the daemon's own values: names, the image, the port, the agent's command, the
Flink REST endpoint it follows.

Each raises ValueError with what is wrong and what is expected (see :mod:`rmd.config.parsers`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from rmd.config.names import is_dns1035_label, is_dns1123_label, is_dns1123_subdomain
from rmd.config.parsers import OBJECT_NAME_CHARACTERS, integer, optional_text, require_name
from rmd.config.values import parse_duration, parse_list

MAX_CLUSTER_ID_LENGTH = 45  # Flink's limit: pod names get "-taskmanager-<a>-<i>" appended
DEFAULT_IMAGE = "apache/flink:1.20"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_ALIASES = {"warn": "warning"}
FLINK_REST_URL_EXAMPLE = "http://localhost:8081"

_port = integer(min_value=1, max_value=65535)


def cluster_id(raw: str) -> str:
    """``kubernetes.cluster-id``: a DNS-1035 label of at most 45 characters."""
    value = raw.strip()
    if len(value) > MAX_CLUSTER_ID_LENGTH:
        raise ValueError(
            f"'{value}' is {len(value)} characters long; expected at most "
            f"{MAX_CLUSTER_ID_LENGTH} (pod names append '-taskmanager-<attempt>-<index>')"
        )
    return require_name(
        value,
        rule=is_dns1035_label,
        kind="Kubernetes",
        expected="lowercase letters, digits and '-', starting with a letter and ending with "
        "a letter or digit, e.g. 'my-flink'",
    )


def namespace(raw: str) -> str:
    return require_name(
        raw.strip(),
        rule=is_dns1123_label,
        kind="namespace",
        expected="at most 63 lowercase letters, digits and '-', e.g. 'default' or 'flink'",
    )


def container_image(raw: str) -> str:
    value = raw.strip()
    if not value or any(char.isspace() for char in value):
        raise ValueError(f"'{value}' is not a container image; expected e.g. '{DEFAULT_IMAGE}'")
    return value


def single_port(raw: str) -> int:
    """``taskmanager.rpc.port``: Flink allows a range; a pod needs one fixed port."""
    if not raw.strip().isdigit():
        raise ValueError(
            f"'{raw}' is not a single port; on Kubernetes the TaskManager needs a fixed "
            "port, e.g. 6122"
        )
    return _port(raw)


def optional_secret_name(raw: str) -> str | None:
    """A Secret name, or blank (unset)."""
    value = optional_text(raw)
    if value is None:
        return None
    return require_name(
        value,
        rule=is_dns1123_subdomain,
        kind="Secret",
        expected=f"{OBJECT_NAME_CHARACTERS}, e.g. 'rmd-token'",
    )


def agent_command(raw: str) -> tuple[str, ...]:
    command = tuple(parse_list(raw))
    if not command:
        raise ValueError("is empty; expected the agent's command, e.g. 'rmd;taskmanager'")
    return command


def flink_rest_url(raw: str) -> str | None:
    """``rmd.flink.rest-url``: the JobManager's REST endpoint, an http(s) URL without a trailing
    slash; blank is None (not following Flink)."""
    value = optional_text(raw)
    if value is None:
        return None
    example = FLINK_REST_URL_EXAMPLE
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"'{value}' is not an http(s) URL; expected the JobManager's REST endpoint, "
            f"e.g. '{example}'"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"'{value}' has an invalid port; expected e.g. '{example}'") from None
    return value.rstrip("/")


KUBERNETES_HA_FACTORY = "org.apache.flink.kubernetes.highavailability.KubernetesHaServicesFactory"
HA_TYPES = ("NONE", "KUBERNETES", "ZOOKEEPER")


MIN_WATCH_IDLE_TIMEOUT = 1.0  # seconds; shorter would renew a quiet watch in a busy loop


def watch_idle_timeout(raw: str) -> float:
    """``rmd.kubernetes.watch-idle-timeout``: seconds, at least one; a bare number is in
    milliseconds (Flink's durations)."""
    value = parse_duration(raw, default_unit="ms")
    if value < MIN_WATCH_IDLE_TIMEOUT:
        raise ValueError(
            f"'{raw.strip()}' is shorter than {MIN_WATCH_IDLE_TIMEOUT:g} s; expected a duration "
            "of at least 1 s, e.g. '70 s'"
        )
    return value


def high_availability_type(raw: str) -> str:
    """``high-availability.type``: Flink's ``NONE``, ``KUBERNETES`` or ``ZOOKEEPER`` (any case),
    or the Kubernetes factory's class name (= ``KUBERNETES``); returned upper-case."""
    value = raw.strip()
    if value == KUBERNETES_HA_FACTORY:
        return "KUBERNETES"
    if value.upper() in HA_TYPES:
        return value.upper()
    raise ValueError(
        f"'{value}' is no high-availability type rmd knows; expected NONE, KUBERNETES (or "
        f"{KUBERNETES_HA_FACTORY}) or ZOOKEEPER"
    )
