"""Where and as whom a TaskManager pod runs: image pull policy and secrets, service account,
labels, annotations, node selector, tolerations.

Parsers of single values (raising ValueError, see :mod:`rmd.config.parsers`), in Flink's
syntax (``KubernetesConfigOptions``): maps ``k1:v1,k2:v2``, lists of maps ``k:v,k:v;k:v``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rmd.config.names import is_dns1123_subdomain, is_label_value, is_qualified_name
from rmd.config.parsers import (
    OBJECT_NAME_CHARACTERS,
    choice,
    list_of_maps,
    names_list,
    require_name,
    show_entry,
    stripped_map,
)

DEFAULT_PULL_POLICY = "IfNotPresent"
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
DEFAULT_SERVICE_ACCOUNT = "default"
TOLERATION_EXAMPLE = "key:k,operator:Equal,value:v,effect:NoSchedule"

_TOLERATION_OPERATORS = ("Equal", "Exists")
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_TOLERATION_FIELDS = ("key", "operator", "value", "effect", "tolerationseconds")

pull_policy = choice(PULL_POLICIES, what="an image pull policy")


@dataclass(frozen=True, kw_only=True)
class Toleration:
    """One entry of ``kubernetes.taskmanager.tolerations``."""

    operator: str
    key: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    def to_manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {}
        if self.key is not None:
            manifest["key"] = self.key
        manifest["operator"] = self.operator
        if self.value is not None:
            manifest["value"] = self.value
        if self.effect is not None:
            manifest["effect"] = self.effect
        if self.toleration_seconds is not None:
            manifest["tolerationSeconds"] = self.toleration_seconds
        return manifest


def pull_secrets(raw: str) -> tuple[str, ...]:
    """``kubernetes.container.image.pull-secrets``: Secret names separated by ';'."""
    expected = f"{OBJECT_NAME_CHARACTERS}; list Secret names separated by ';'"
    return tuple(
        require_name(name, rule=is_dns1123_subdomain, kind="Secret", expected=expected)
        for name in names_list(raw)
    )


def service_account(raw: str) -> str:
    return require_name(
        raw.strip(),
        rule=is_dns1123_subdomain,
        kind="ServiceAccount",
        expected=OBJECT_NAME_CHARACTERS,
    )


def label_map(entries: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Labels (or a node selector): qualified names mapped to label values."""
    labels = _qualified_keys(entries, kind="label")
    for name, value in labels:
        if not is_label_value(value):
            raise ValueError(
                f"value {value!r} of {name!r} is not a valid label value; use at most 63 "
                "letters, digits, '-', '_' and '.', starting and ending alphanumeric"
            )
    return labels


def annotation_map(entries: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Annotations: qualified names mapped to any text."""
    return _qualified_keys(entries, kind="annotation")


def _qualified_keys(entries: Mapping[str, str], *, kind: str) -> tuple[tuple[str, str], ...]:
    stripped = stripped_map(entries)
    for name in stripped:
        if not is_qualified_name(name):
            raise ValueError(
                f"{name!r} is not a valid {kind} key; use [prefix/]name with letters, "
                "digits, '-', '_' and '.' (name at most 63 characters)"
            )
    return tuple(stripped.items())


def tolerations(raw: str) -> tuple[Toleration, ...]:
    """``kubernetes.taskmanager.tolerations``: ``key:k,operator:Equal,value:v,effect:E;...``."""
    items = list_of_maps(raw, what="toleration", example=TOLERATION_EXAMPLE)
    return tuple(_toleration(item) for item in items)


def _toleration(item: Mapping[str, str]) -> Toleration:
    shown = f"toleration {show_entry(item)}"
    unknown = sorted(set(item) - set(_TOLERATION_FIELDS))
    if unknown:
        raise ValueError(
            f"{shown} has unknown field(s) {', '.join(unknown)}; use "
            "key, operator, value, effect, tolerationSeconds"
        )
    if not item.get("operator"):
        raise ValueError(
            f"{shown} has no operator; add operator:Equal (with a value) or "
            f"operator:Exists, e.g. {TOLERATION_EXAMPLE}"
        )
    operator = _choose(item["operator"], _TOLERATION_OPERATORS)
    if operator is None:
        raise ValueError(f"{shown} has operator {item['operator']!r}; use Equal or Exists")
    effect: str | None = None
    if item.get("effect"):
        effect = _choose(item["effect"], _TOLERATION_EFFECTS)
        if effect is None:
            raise ValueError(
                f"{shown} has effect {item['effect']!r}; use "
                f"{', '.join(_TOLERATION_EFFECTS)} or leave it out for all effects"
            )
    key = item.get("key") or None
    value = item.get("value")
    if operator == "Exists" and value:
        raise ValueError(
            f"{shown} has a value with operator Exists; drop the value or use operator:Equal"
        )
    if key is None and operator != "Exists":
        raise ValueError(f"{shown} has no key; an empty key needs operator:Exists")
    if key is not None and not is_qualified_name(key):
        raise ValueError(f"{shown} has key {key!r}, which is not a valid taint key")
    if operator == "Equal" and value and not is_label_value(value):
        raise ValueError(f"{shown} has value {value!r}, which is not a valid taint value")
    return Toleration(
        key=key,
        operator=operator,
        value=value if operator == "Equal" else None,
        effect=effect,
        toleration_seconds=_toleration_seconds(item, shown=shown, effect=effect),
    )


def _toleration_seconds(item: Mapping[str, str], *, shown: str, effect: str | None) -> int | None:
    raw = item.get("tolerationseconds")
    if not raw:
        return None
    try:
        seconds = int(raw)
    except ValueError:
        raise ValueError(f"{shown} has tolerationSeconds {raw!r}; use whole seconds") from None
    if effect != "NoExecute":
        raise ValueError(
            f"{shown} sets tolerationSeconds without effect:NoExecute; "
            "Kubernetes allows it only with NoExecute"
        )
    return seconds


def _choose(raw: str, choices: tuple[str, ...]) -> str | None:
    """``raw`` matched case-insensitively against ``choices`` (Flink is lenient here)."""
    for option in choices:
        if raw.strip().lower() == option.lower():
            return option
    return None
