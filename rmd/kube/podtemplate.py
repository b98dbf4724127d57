"""The TaskManager pod template file: read once, checked, split into pod and main container.

A template is a YAML ``kind: Pod``; its main container is the one named
``flink-main-container`` (an empty one stands in when there is none). Everything else in it,
sidecars, init containers, volumes, affinity, security contexts, survives into every
TaskManager pod; ``rmd.kube.podspec`` decides which fields configuration overrides.

The checks here catch, at start-up and with the file named, what would otherwise fail at
the first pod create: not YAML, not a mapping, not a Pod, misshapen lists and maps.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rmd.config.errors import ConfigError

MAIN_CONTAINER_NAME = "flink-main-container"

# Server-owned metadata a template copied from a live pod may carry; never sent back.
_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "selfLink",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
)


@dataclass(frozen=True)
class PodTemplate:
    """A checked template: the pod without its main container, and the main container.

    Both are private copies; callers must deep-copy before changing them.
    """

    pod: dict[str, Any] = field(default_factory=dict)
    main_container: dict[str, Any] = field(default_factory=dict)
    # Where the main container stood among spec.containers (it goes back there).
    main_index: int = 0
    source: Path | None = None
    text: str | None = None  # the file as read: Flink's ConfigMap carries it to the pod


def empty_pod_template() -> PodTemplate:
    return PodTemplate(pod={"spec": {"containers": []}}, main_container={}, main_index=0)


class _Checker:
    """Raises ConfigErrors that name the option, the file, the field and the fix."""

    def __init__(self, *, key: str, path: Path) -> None:
        self.key = key
        self.path = path

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.key}: pod template file {self.path} {message}", key=self.key)

    def mapping(self, value: object, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(f"has {where} of type {_kind(value)}; it must be a mapping")
        return value

    def list_of_mappings(self, value: object, where: str) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(f"has {where} of type {_kind(value)}; it must be a list")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(
                    f"has {where}[{index}] of type {_kind(item)}; each entry must be a mapping"
                )
        return value

    def string_map(self, value: object, where: str) -> dict[str, Any]:
        mapping = self.mapping(value, where)
        for name, item in mapping.items():
            if not isinstance(name, str) or not isinstance(item, str):
                raise self.error(
                    f"has {where}.{name} = {item!r} ({_kind(item)}); keys and values must "
                    f"be strings: quote the value"
                )
        return mapping

    def named(self, items: list[dict[str, Any]], where: str) -> None:
        seen: set[str] = set()
        for index, item in enumerate(items):
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise self.error(f"has {where}[{index}] without a name; give it one")
            if name in seen:
                raise self.error(f"has two {where} named {name!r}; names must be unique")
            seen.add(name)


def _kind(value: object) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def load_pod_template(path: Path, *, key: str) -> PodTemplate:
    """Read and check the template at ``path`` (named by the option ``key`` in errors)."""
    check = _Checker(key=key, path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise check.error("does not exist; fix the path or unset the option") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise check.error(f"cannot be read ({reason}); fix the file or the path") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise check.error(
            f"is not valid YAML ({problem}{where}); fix the file, it must hold one Pod"
        ) from None
    return dataclasses.replace(_parse(document, check=check), text=text)


def _parse(document: object, *, check: _Checker) -> PodTemplate:
    if document is None:
        raise check.error("is empty; it must hold a Pod (apiVersion: v1, kind: Pod, spec: ...)")
    if not isinstance(document, dict):
        raise check.error(
            f"holds a {_kind(document)}, not a Pod; it must be a mapping with "
            f"apiVersion: v1, kind: Pod and a spec"
        )
    kind = document.get("kind")
    if kind is not None and kind != "Pod":
        raise check.error(
            f"has kind {kind!r}; a pod template must be kind: Pod (take the pod part "
            f"of a {kind} and write it as a Pod)"
        )
    api_version = document.get("apiVersion")
    if api_version is not None and api_version != "v1":
        raise check.error(f"has apiVersion {api_version!r}; a Pod is apiVersion: v1")
    unknown = sorted(set(document) - {"apiVersion", "kind", "metadata", "spec", "status"})
    if unknown:
        raise check.error(
            f"has unknown top-level field(s) {', '.join(map(str, unknown))}; a Pod has "
            f"apiVersion, kind, metadata and spec"
        )
    pod = copy.deepcopy(document)
    pod.pop("status", None)
    metadata = check.mapping(pod.get("metadata"), "metadata")
    for name in _SERVER_METADATA:
        metadata.pop(name, None)
    check.string_map(metadata.get("labels"), "metadata.labels")
    check.string_map(metadata.get("annotations"), "metadata.annotations")
    check.list_of_mappings(metadata.get("ownerReferences"), "metadata.ownerReferences")
    pod["metadata"] = metadata

    spec = check.mapping(pod.get("spec"), "spec")
    pod["spec"] = spec
    containers = check.list_of_mappings(spec.get("containers"), "spec.containers")
    check.named(containers, "spec.containers")
    init_containers = check.list_of_mappings(spec.get("initContainers"), "spec.initContainers")
    check.named(init_containers, "spec.initContainers")
    volumes = check.list_of_mappings(spec.get("volumes"), "spec.volumes")
    check.named(volumes, "spec.volumes")
    check.string_map(spec.get("nodeSelector"), "spec.nodeSelector")
    check.list_of_mappings(spec.get("tolerations"), "spec.tolerations")
    check.list_of_mappings(spec.get("imagePullSecrets"), "spec.imagePullSecrets")
    for flag in ("hostNetwork",):
        if flag in spec and not isinstance(spec[flag], bool):
            raise check.error(f"has spec.{flag} = {spec[flag]!r}; use true or false")

    main_index = 0
    main: dict[str, Any] = {}
    others: list[dict[str, Any]] = []
    for index, container in enumerate(containers):
        if container.get("name") == MAIN_CONTAINER_NAME:
            main_index, main = index, container
        else:
            others.append(container)
    spec["containers"] = others
    _check_main_container(main, check=check)
    return PodTemplate(pod=pod, main_container=main, main_index=main_index, source=check.path)


def _check_main_container(main: Mapping[str, Any], *, check: _Checker) -> None:
    where = f"spec.containers[{MAIN_CONTAINER_NAME}]"
    env = check.list_of_mappings(main.get("env"), f"{where}.env")
    check.named(env, f"{where}.env")
    check.list_of_mappings(main.get("ports"), f"{where}.ports")
    mounts = check.list_of_mappings(main.get("volumeMounts"), f"{where}.volumeMounts")
    for index, mount in enumerate(mounts):
        if not isinstance(mount.get("mountPath"), str):
            raise check.error(f"has {where}.volumeMounts[{index}] without a mountPath")
    resources = check.mapping(main.get("resources"), f"{where}.resources")
    for part in ("requests", "limits"):
        check.mapping(resources.get(part), f"{where}.resources.{part}")
    for part in ("command", "args"):
        value = main.get(part)
        if value is not None and not isinstance(value, list):
            raise check.error(f"has {where}.{part} of type {_kind(value)}; it must be a list")
    image = main.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise check.error(f"has {where}.image = {image!r}; give an image name or leave it out")
