"""A container's environment as the kubelet (v1.20) builds it — pure, no API calls.

The caller first asks which ConfigMaps and Secrets a container refers to
(:func:`referenced_sources`), reads them from the API server, and hands them in as
:class:`EnvSources` (``None`` for one that does not exist). :func:`resolve_container_env`
then follows the kubelet's ``makeEnvironmentVariables``: ``envFrom`` first, then ``env`` in
order (a later entry sees the earlier ones in ``$(VAR)`` references), downward-API
``fieldRef`` and ``resourceFieldRef``, ``configMapKeyRef`` and ``secretKeyRef`` with
``optional`` honoured. A missing required source raises :class:`EnvResolutionError` with the
kubelet's message, which becomes the container's ``CreateContainerConfigError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

Pod = Mapping[str, Any]
Container = Mapping[str, Any]

SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_DIR_VARIABLE = "RMD_SERVICE_ACCOUNT_DIR"
INHERITED_VARIABLES = ("PATH", "HOME")

_ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class EnvResolutionError(Exception):
    """The kubelet could not build the environment; ``str(error)`` is its message."""


@dataclass(frozen=True, slots=True)
class EnvSources:
    """ConfigMaps and Secrets of the pod's namespace, by name; ``None`` = not found.

    Secret values are already decoded (see :func:`secret_values`).
    """

    config_maps: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReferencedSources:
    config_maps: frozenset[str]
    secrets: frozenset[str]


@dataclass(frozen=True, slots=True)
class ApiServerAddress:
    """Where processes in a "pod" reach the API server (the ``kubernetes`` service)."""

    host: str
    port: int


# ------------------------------------------------------------------ what to fetch first


def referenced_sources(containers: Iterable[Container]) -> ReferencedSources:
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for container in containers:
        for env_from in container.get("envFrom") or []:
            if env_from.get("configMapRef"):
                config_maps.add(str(env_from["configMapRef"].get("name", "")))
            if env_from.get("secretRef"):
                secrets.add(str(env_from["secretRef"].get("name", "")))
        for variable in container.get("env") or []:
            value_from = variable.get("valueFrom") or {}
            if value_from.get("configMapKeyRef"):
                config_maps.add(str(value_from["configMapKeyRef"].get("name", "")))
            if value_from.get("secretKeyRef"):
                secrets.add(str(value_from["secretKeyRef"].get("name", "")))
    return ReferencedSources(config_maps=frozenset(config_maps), secrets=frozenset(secrets))


def needs_node_allocatable(containers: Iterable[Container]) -> bool:
    """True if a ``resourceFieldRef`` asks for a limit the container does not set (the kubelet
    then answers with the node's allocatable)."""
    for container in containers:
        limits = (container.get("resources") or {}).get("limits") or {}
        for variable in container.get("env") or []:
            ref = (variable.get("valueFrom") or {}).get("resourceFieldRef")
            if not ref:
                continue
            resource = str(ref.get("resource", ""))
            if resource.startswith("limits.") and resource.removeprefix("limits.") not in limits:
                return True
    return False


def config_map_values(config_map: Mapping[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in (config_map.get("data") or {}).items()}


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's ``data``, base64-decoded (undecodable values are skipped)."""
    values: dict[str, str] = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            raw = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            continue
        values[str(key)] = raw.decode("utf-8", "surrogateescape")
    return values


# ------------------------------------------------------------------ $(VAR) expansion


def expand(text: str, lookup: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` is a literal ``$``, unknown or unterminated
    references stay as they are."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                closer = rest.find(")", 1)
                if closer == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = rest[1:closer]
                    out.append(lookup.get(name, f"$({name})"))
                    advance = closer + 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def expand_command(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The kubelet expands ``$(VAR)`` in ``command`` and ``args`` with the container's env."""
    return [expand(str(part), env) for part in argv]


# ------------------------------------------------------------------ downward API


def format_map(values: Mapping[str, str]) -> str:
    """The kubelet's ``FormatMap``: ``key="value"`` lines, sorted by key."""
    return "\n".join(
        f"{key}={json.dumps(values[key], ensure_ascii=False)}" for key in sorted(values)
    )


def _split_subscript(path: str) -> tuple[str, str] | None:
    if not path.endswith("']"):
        return None
    opener = path.find("['")
    if opener == -1:
        return None
    return path[:opener], path[opener + 2 : -2]


def field_ref_value(
    path: str, pod: Pod, *, pod_ip: str, pod_ips: Sequence[str], host_ip: str
) -> str:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    subscripted = _split_subscript(path)
    if subscripted is not None:
        base, key = subscripted
        if base in ("metadata.annotations", "metadata.labels"):
            collection = metadata.get(base.removeprefix("metadata.")) or {}
            return str(collection.get(key, ""))
        raise EnvResolutionError(f'fieldPath "{path}" does not support subscript')
    simple: dict[str, str] = {
        "spec.nodeName": str(spec.get("nodeName", "")),
        "spec.serviceAccountName": str(spec.get("serviceAccountName", "")),
        "status.hostIP": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": ",".join(pod_ips),
        "metadata.name": str(metadata.get("name", "")),
        "metadata.namespace": str(metadata.get("namespace", "")),
        "metadata.uid": str(metadata.get("uid", "")),
    }
    if path in simple:
        return simple[path]
    if path in ("metadata.annotations", "metadata.labels"):
        collection = metadata.get(path.removeprefix("metadata.")) or {}
        return format_map({str(k): str(v) for k, v in collection.items()})
    raise EnvResolutionError(f"unsupported fieldPath: {path}")


_BINARY_SUFFIXES = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15}
_DECIMAL_SUFFIXES["E"] = 18
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes resource quantity (``500m``, ``2Gi``, ``1e3``, ``1.5``) as an exact number."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"quantity {text!r} is not a Kubernetes quantity")
    number, suffix = match.groups()
    try:
        value = Fraction(number)
    except ValueError as error:
        raise ValueError(f"quantity {text!r} is not a Kubernetes quantity") from error
    if suffix in _BINARY_SUFFIXES:
        return value * Fraction(1024) ** _BINARY_SUFFIXES[suffix]
    if suffix in _DECIMAL_SUFFIXES:
        return value * Fraction(10) ** _DECIMAL_SUFFIXES[suffix]
    if suffix[:1] in ("e", "E"):
        return value * Fraction(10) ** int(suffix[1:])
    raise ValueError(f"quantity {text!r} has an unknown suffix {suffix!r}")


def _ceil_milli(value: Fraction) -> int:
    """Quantity.MilliValue(): milli-units rounded up."""
    return math.ceil(value * 1000)


def _ceil_units(value: Fraction) -> int:
    """Quantity.Value(): units rounded up."""
    return math.ceil(value)


def resource_field_value(
    ref: Mapping[str, Any],
    container: Container,
    *,
    node_allocatable: Mapping[str, str],
) -> str:
    resource = str(ref.get("resource", ""))
    divisor_text = str(ref.get("divisor") or "1")
    try:
        divisor = parse_quantity(divisor_text)
    except ValueError as error:
        raise EnvResolutionError(str(error)) from error
    if divisor == 0:
        divisor = Fraction(1)
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise EnvResolutionError(f"unsupported container resource : {resource}")
    resources = container.get("resources") or {}
    declared = (resources.get(kind) or {}).get(name)
    if declared is None and kind == "limits":
        declared = node_allocatable.get(name)
    try:
        amount = parse_quantity(str(declared)) if declared is not None else Fraction(0)
    except ValueError as error:
        raise EnvResolutionError(str(error)) from error
    if name == "cpu":
        return str(math.ceil(Fraction(_ceil_milli(amount)) / _ceil_milli(divisor)))
    return str(math.ceil(Fraction(_ceil_units(amount)) / _ceil_units(divisor)))


# ------------------------------------------------------------------ the whole environment


def service_environment(api_server: ApiServerAddress) -> dict[str, str]:
    """The variables the kubelet derives from the ``kubernetes`` service."""
    host, port = api_server.host, str(api_server.port)
    prefix = f"KUBERNETES_PORT_{port}_TCP"
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        prefix: f"tcp://{host}:{port}",
        f"{prefix}_PROTO": "tcp",
        f"{prefix}_PORT": port,
        f"{prefix}_ADDR": host,
    }


def runtime_environment(
    pod: Pod,
    *,
    inherited: Mapping[str, str],
    service_account_dir: str | None,
) -> dict[str, str]:
    """What the container runtime and the emulator add before the pod's own env: PATH and
    HOME from the emulator, HOSTNAME, and where the service-account files are."""
    env = {name: inherited[name] for name in INHERITED_VARIABLES if name in inherited}
    spec = pod.get("spec") or {}
    env["HOSTNAME"] = str(spec.get("hostname") or (pod.get("metadata") or {}).get("name", ""))
    if service_account_dir is not None:
        env[SERVICE_ACCOUNT_DIR_VARIABLE] = service_account_dir
    return env


def _lookup_source(
    sources: Mapping[str, Mapping[str, str] | None], name: str, *, kind: str
) -> Mapping[str, str] | None:
    if name not in sources:
        # The caller did not fetch it: a bug on our side, not the pod's.
        raise KeyError(f"{kind} {name!r} was not fetched")
    return sources[name]


def _env_from_values(container: Container, *, sources: EnvSources) -> dict[str, str]:
    values: dict[str, str] = {}
    for env_from in container.get("envFrom") or []:
        prefix = str(env_from.get("prefix") or "")
        if env_from.get("configMapRef"):
            ref, kind, store = env_from["configMapRef"], "ConfigMap", sources.config_maps
        elif env_from.get("secretRef"):
            ref, kind, store = env_from["secretRef"], "Secret", sources.secrets
        else:
            continue
        name = str(ref.get("name", ""))
        found = _lookup_source(store, name, kind=kind)
        if found is None:
            if ref.get("optional"):
                continue
            raise EnvResolutionError(f'{kind.lower()} "{name}" not found')
        for key, value in found.items():
            full_key = prefix + key
            if _ENV_VAR_NAME.match(full_key):  # the kubelet skips invalid names
                values[full_key] = value
    return values


def _key_ref_value(
    ref: Mapping[str, Any], *, kind: str, namespace: str, sources: EnvSources
) -> str | None:
    """The value a configMapKeyRef/secretKeyRef points at; None = optional and absent."""
    name = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    optional = bool(ref.get("optional"))
    store = sources.config_maps if kind == "ConfigMap" else sources.secrets
    found = _lookup_source(store, name, kind=kind)
    if found is None:
        if optional:
            return None
        raise EnvResolutionError(f'{kind.lower()} "{name}" not found')
    if key not in found:
        if optional:
            return None
        raise EnvResolutionError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return found[key]


def resolve_container_env(
    pod: Pod,
    container: Container,
    *,
    pod_ip: str,
    host_ip: str,
    sources: EnvSources,
    api_server: ApiServerAddress,
    inherited: Mapping[str, str],
    service_account_dir: str | None,
    node_allocatable: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of ``container``'s process.

    Raises :class:`EnvResolutionError` (the kubelet's message) when a required source is
    missing or a reference is invalid.
    """
    namespace = str((pod.get("metadata") or {}).get("namespace", ""))
    service_env = service_environment(api_server)
    declared = _env_from_values(container, sources=sources)

    # $(VAR) sees the container's variables declared so far, then the service variables.
    lookup = ChainMap(declared, service_env)
    for variable in container.get("env") or []:
        name = str(variable.get("name", ""))
        value = str(variable.get("value") or "")
        value_from = variable.get("valueFrom")
        if value:
            value = expand(value, lookup)
        elif value_from:
            resolved = _value_from(
                value_from,
                pod=pod,
                container=container,
                namespace=namespace,
                pod_ip=pod_ip,
                host_ip=host_ip,
                sources=sources,
                node_allocatable=node_allocatable or {},
            )
            if resolved is None:  # optional and absent: the kubelet skips the variable
                continue
            value = resolved
        declared[name] = value

    env = runtime_environment(pod, inherited=inherited, service_account_dir=service_account_dir)
    env.update(service_env)
    env.update(declared)
    return env


def _value_from(
    value_from: Mapping[str, Any],
    *,
    pod: Pod,
    container: Container,
    namespace: str,
    pod_ip: str,
    host_ip: str,
    sources: EnvSources,
    node_allocatable: Mapping[str, str],
) -> str | None:
    if value_from.get("fieldRef"):
        path = str(value_from["fieldRef"].get("fieldPath", ""))
        return field_ref_value(path, pod, pod_ip=pod_ip, pod_ips=[pod_ip], host_ip=host_ip)
    if value_from.get("resourceFieldRef"):
        ref = value_from["resourceFieldRef"]
        target = container
        wanted = ref.get("containerName")
        if wanted and wanted != container.get("name"):
            containers = (pod.get("spec") or {}).get("containers") or []
            matches = [c for c in containers if c.get("name") == wanted]
            if not matches:
                raise EnvResolutionError(f"container {wanted} not found in pod")
            target = matches[0]
        return resource_field_value(ref, target, node_allocatable=node_allocatable)
    if value_from.get("configMapKeyRef"):
        return _key_ref_value(
            value_from["configMapKeyRef"], kind="ConfigMap", namespace=namespace, sources=sources
        )
    if value_from.get("secretKeyRef"):
        return _key_ref_value(
            value_from["secretKeyRef"], kind="Secret", namespace=namespace, sources=sources
        )
    return ""


def service_account_secret_name(pod: Pod, container: Container) -> str | None:
    """The token Secret the ServiceAccount admission plugin mounted into ``container`` at the
    well-known path; None when the pod opted out (``automountServiceAccountToken: false``)."""
    mounts = container.get("volumeMounts") or []
    volume_name = next(
        (m.get("name") for m in mounts if m.get("mountPath") == SERVICE_ACCOUNT_MOUNT_PATH), None
    )
    if volume_name is None:
        return None
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == volume_name and volume.get("secret"):
            return str(volume["secret"].get("secretName", "")) or None
    return None
