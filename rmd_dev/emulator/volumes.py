"""ConfigMap and Secret volumes as the kubelet (v1.20) projects them — pure, no I/O.

The caller asks which ConfigMaps and Secrets the pod's volumes use
(:func:`referenced_volume_sources`), reads them, and hands them to :func:`volume_files`,
which returns the files of one volume (path relative to the volume → content and mode),
following ``items`` (key → path, mode), ``defaultMode`` (0644 unless set) and ``optional``.
A missing source or key is a :class:`VolumeError` carrying the kubelet's message; the pod
then waits in ContainerCreating, as it does on a real node.

:func:`container_mounts` says where each of a container's volumes appears
(``volumeMounts``): the emulator materializes the files into a per-pod directory and runs
the container's process in a private mount namespace with that directory bind-mounted at
the ``mountPath``, read-only (:mod:`rmd_dev.emulator.mountns`).

Not supported (the mount is left out, with a warning): ``subPath`` and volume types other
than configMap and secret. The service-account token volume keeps its own handling
(``RMD_SERVICE_ACCOUNT_DIR``, :mod:`rmd_dev.emulator.env`).
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rmd_dev.emulator.env import SERVICE_ACCOUNT_MOUNT_PATH

Pod = Mapping[str, Any]
Container = Mapping[str, Any]

DEFAULT_MODE = 0o644  # the kubelet's default for configMap and secret volumes


class VolumeError(Exception):
    """The kubelet cannot set the volume up; ``str(error)`` is its message."""


@dataclass(frozen=True, slots=True)
class VolumeSource:
    """A configMap or secret volume of the pod."""

    volume: str  # the volume's name in the pod
    kind: str  # "ConfigMap" or "Secret"
    name: str  # the ConfigMap's or Secret's name
    items: tuple[tuple[str, str, int | None], ...]  # (key, path, mode); empty: every key
    default_mode: int
    optional: bool


@dataclass(frozen=True, slots=True)
class VolumeMount:
    volume: str
    mount_path: str
    read_only: bool


@dataclass(frozen=True, slots=True)
class ContainerMounts:
    mounts: tuple[VolumeMount, ...]
    ignored: tuple[str, ...]  # mounts left out, with the reason, for the log


def pod_volume_sources(pod: Pod) -> dict[str, VolumeSource]:
    """The pod's configMap and secret volumes by volume name (others are not listed)."""
    found: dict[str, VolumeSource] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = str(volume.get("name", ""))
        for kind, field, name_field in (
            ("ConfigMap", "configMap", "name"),
            ("Secret", "secret", "secretName"),
        ):
            source = volume.get(field)
            if not isinstance(source, Mapping):
                continue
            items = tuple(
                (
                    str(item.get("key", "")),
                    str(item.get("path", "")),
                    int(item["mode"]) if item.get("mode") is not None else None,
                )
                for item in source.get("items") or []
            )
            mode = source.get("defaultMode")
            found[name] = VolumeSource(
                volume=name,
                kind=kind,
                name=str(source.get(name_field, "")),
                items=items,
                default_mode=int(mode) if mode is not None else DEFAULT_MODE,
                optional=bool(source.get("optional")),
            )
    return found


def container_mounts(
    container: Container, *, sources: Mapping[str, VolumeSource]
) -> ContainerMounts:
    """The container's mounts of configMap and secret volumes, in its order."""
    mounts: list[VolumeMount] = []
    ignored: list[str] = []
    for mount in container.get("volumeMounts") or []:
        volume = str(mount.get("name", ""))
        path = str(mount.get("mountPath", ""))
        if volume not in sources or path == SERVICE_ACCOUNT_MOUNT_PATH:
            continue
        if mount.get("subPath") or mount.get("subPathExpr"):
            ignored.append(f"{volume} at {path}: subPath is not supported by the node emulator")
            continue
        if not posixpath.isabs(path):
            ignored.append(f"{volume} at {path!r}: mountPath must be absolute")
            continue
        mounts.append(
            VolumeMount(
                volume=volume,
                mount_path=posixpath.normpath(path),
                read_only=True,  # configMap and secret volumes are always read-only
            )
        )
    return ContainerMounts(mounts=tuple(mounts), ignored=tuple(ignored))


def referenced_volume_sources(
    containers: Iterable[Container], *, sources: Mapping[str, VolumeSource]
) -> tuple[frozenset[str], frozenset[str]]:
    """(ConfigMap names, Secret names) that the containers' mounts need."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for container in containers:
        for mount in container_mounts(container, sources=sources).mounts:
            source = sources[mount.volume]
            (config_maps if source.kind == "ConfigMap" else secrets).add(source.name)
    return frozenset(config_maps), frozenset(secrets)


def object_values(obj: Mapping[str, Any], *, kind: str) -> dict[str, bytes]:
    """A ConfigMap's ``data`` and ``binaryData``, or a Secret's (base64) ``data``, as bytes;
    ``kind`` is ``ConfigMap`` or ``Secret``."""
    values: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        if kind == "Secret":
            decoded = _b64(value)
            if decoded is not None:
                values[str(key)] = decoded
        else:
            values[str(key)] = str(value).encode("utf-8")
    for key, value in (obj.get("binaryData") or {}).items():
        decoded = _b64(value)
        if decoded is not None:
            values[str(key)] = decoded
    return values


def _b64(value: object) -> bytes | None:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return None


def volume_files(
    source: VolumeSource, values: Mapping[str, bytes] | None
) -> dict[str, tuple[bytes, int]]:
    """The volume's files: relative path → (content, mode). ``values`` None: not found."""
    kind = source.kind.lower()
    if values is None:
        if source.optional:
            return {}
        raise VolumeError(
            f'MountVolume.SetUp failed for volume "{source.volume}" : '
            f'{kind} "{source.name}" not found'
        )
    if not source.items:
        return {key: (value, source.default_mode) for key, value in sorted(values.items())}
    files: dict[str, tuple[bytes, int]] = {}
    for key, path, mode in source.items:
        if key not in values:
            if source.optional:
                continue
            what = "config key" if source.kind == "ConfigMap" else "key"
            raise VolumeError(
                f'MountVolume.SetUp failed for volume "{source.volume}" : '
                f"{kind} references non-existent {what}: {key}"
            )
        files[_relative_path(source.volume, path)] = (
            values[key],
            mode if mode is not None else source.default_mode,
        )
    return files


def _relative_path(volume: str, path: str) -> str:
    normal = posixpath.normpath(path)
    if not path or posixpath.isabs(path) or normal == ".." or normal.startswith("../"):
        raise VolumeError(
            f'MountVolume.SetUp failed for volume "{volume}" : invalid path {path!r}: '
            "must be relative and may not contain '..'"
        )
    return normal
