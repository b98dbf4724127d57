"""What a TaskManager pod asks for: memory, CPU limit factors, external resources.

Parsers of single values (raising ValueError, see :mod:`rmd.config.parsers`); the CPU and
memory requests themselves are checked once, in :class:`rmd.config.settings.RmdSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from rmd.config.names import is_qualified_name
from rmd.config.parsers import number
from rmd.config.values import parse_list, parse_memory_size

MIN_PROCESS_MEMORY = 1 << 20  # bytes
NO_EXTERNAL_RESOURCES = "none"  # Flink's word for "no external resources"

_number = number()


@dataclass(frozen=True, kw_only=True)
class ExternalResource:
    """An extended resource: ``external-resource.<name>.{amount,kubernetes.config-key}``."""

    name: str
    config_key: str  # the Kubernetes resource name, e.g. nvidia.com/gpu
    amount: int


def process_memory(raw: str) -> int:
    """``taskmanager.memory.process.size``: bytes, at least 1 MiB; a bare number is bytes."""
    value = parse_memory_size(raw, default_unit="b")
    if value < MIN_PROCESS_MEMORY:
        raise ValueError(f"'{raw}' is less than 1 MiB; expected e.g. '1728m' or '4g'")
    return value


def limit_factor(raw: str) -> Decimal:
    """A resource limit factor: the limit is the request times it, so at least 1."""
    factor = _number(raw)
    if factor < 1.0:
        raise ValueError(
            f"{raw!r} is below 1; the limit is the request times this factor, "
            f"so it must be at least 1.0 (e.g. 1.0 for limit = request, 2.0 for twice)"
        )
    return Decimal(repr(factor))


def external_resource_names(raw: str) -> tuple[str, ...]:
    """``external-resources``: ``gpu;fpga``, or ``none``."""
    names = parse_list(raw)
    if names == [NO_EXTERNAL_RESOURCES]:
        return ()
    if NO_EXTERNAL_RESOURCES in names:
        raise ValueError(
            f"'{NO_EXTERNAL_RESOURCES}' is reserved (it means no external resources); "
            "rename the resource"
        )
    return tuple(dict.fromkeys(names))


def resource_name(raw: str) -> str:
    """``external-resource.<name>.kubernetes.config-key``: a Kubernetes resource name, or
    blank (the resource is then not requested from Kubernetes, as in Flink)."""
    name = raw.strip()
    if name and not is_qualified_name(name):
        raise ValueError(f"{name!r} is not a Kubernetes resource name; use e.g. nvidia.com/gpu")
    return name
