"""Readiness probes as the kubelet (v1.20) reads and counts them — pure, no I/O.

:func:`readiness_probe` reads a container's ``readinessProbe`` (``httpGet`` or ``tcpSocket``;
a named port is looked up in the container's ``ports``; the host defaults to the pod IP) into
a :class:`ProbeSpec`; :class:`ProbeResults` counts the outcomes the way the kubelet's prober
worker does: a container starts not ready, nothing is probed for ``initialDelaySeconds``, and
the result flips only after ``successThreshold`` successes or ``failureThreshold`` failures in
a row. The probing itself is :mod:`rmd_dev.emulator.prober`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The API server's defaults (it fills them in on create; a pod read back has them).
DEFAULT_PERIOD = 10.0
DEFAULT_TIMEOUT = 1.0
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_FAILURE_THRESHOLD = 3


class ProbeError(ValueError):
    """A probe the emulator cannot run (an exec probe, an unknown named port)."""


@dataclass(frozen=True, kw_only=True)
class ProbeSpec:
    kind: str  # "http" or "tcp"
    host: str
    port: int
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay: float = 0.0
    period: float = DEFAULT_PERIOD
    timeout: float = DEFAULT_TIMEOUT
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD

    @property
    def url(self) -> str:
        path = self.path if self.path.startswith("/") else f"/{self.path}"
        return f"{self.scheme.lower()}://{self.host}:{self.port}{path}"

    def describe(self) -> str:
        target = self.url if self.kind == "http" else f"tcp://{self.host}:{self.port}"
        return f"{target} every {self.period:g}s"


def _port(value: object, container: Mapping[str, Any]) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    for port in container.get("ports") or []:
        if port.get("name") == text:
            return int(port["containerPort"])
    raise ProbeError(f"port {text!r} is not one of the container's named ports")


def _number(probe: Mapping[str, Any], key: str, default: float) -> float:
    value = probe.get(key)
    return float(value) if value else default


def readiness_probe(container: Mapping[str, Any], *, pod_ip: str) -> ProbeSpec | None:
    """The container's readiness probe, or None when it has none; ProbeError when the
    emulator cannot run it."""
    probe = container.get("readinessProbe")
    if not probe:
        return None
    timing: dict[str, Any] = {
        "initial_delay": _number(probe, "initialDelaySeconds", 0.0),
        "period": _number(probe, "periodSeconds", DEFAULT_PERIOD),
        "timeout": _number(probe, "timeoutSeconds", DEFAULT_TIMEOUT),
        "success_threshold": int(_number(probe, "successThreshold", DEFAULT_SUCCESS_THRESHOLD)),
        "failure_threshold": int(_number(probe, "failureThreshold", DEFAULT_FAILURE_THRESHOLD)),
    }
    if http := probe.get("httpGet"):
        headers = tuple(
            (str(h.get("name", "")), str(h.get("value", ""))) for h in http.get("httpHeaders") or []
        )
        return ProbeSpec(
            kind="http",
            host=str(http.get("host") or pod_ip),
            port=_port(http.get("port"), container),
            path=str(http.get("path") or "/"),
            scheme=str(http.get("scheme") or "HTTP").upper(),
            headers=headers,
            **timing,
        )
    if tcp := probe.get("tcpSocket"):
        return ProbeSpec(
            kind="tcp",
            host=str(tcp.get("host") or pod_ip),
            port=_port(tcp.get("port"), container),
            **timing,
        )
    kinds = sorted(key for key in ("exec", "grpc") if key in probe)
    raise ProbeError(f"{'/'.join(kinds) or 'this'} probe is not run by the node emulator")


@dataclass
class ProbeResults:
    """The kubelet's prober worker's bookkeeping of one readiness probe."""

    success_threshold: int
    failure_threshold: int
    ready: bool = False  # a readiness probe starts out failed
    _last: bool | None = field(default=None, repr=False)
    _run: int = field(default=0, repr=False)

    def record(self, success: bool) -> bool:
        """Count one outcome; True when ``ready`` changed."""
        if success == self._last:
            self._run += 1
        else:
            self._last, self._run = success, 1
        threshold = self.success_threshold if success else self.failure_threshold
        if self._run < threshold or success == self.ready:
            return False
        self.ready = success
        return True
