"""Start, stop and inspect a real local Kubernetes control plane with emulated nodes.

``up`` runs etcd, kube-apiserver (token auth, RBAC, ResourceQuota admission),
kube-controller-manager and kube-scheduler v1.20.2 on free loopback ports, creates Ready
fake Node objects, writes an admin kubeconfig and starts the node emulator (the kubelet's
stand-in). Every process is started in its own session and recorded in ``DIR/state.json``,
so ``down`` can stop exactly what ``up`` started, even from another process.

``restart COMPONENT`` stops one component and starts it again with the same command line and
ports (``--down-for S`` keeps it down that long), for fault tests: an API server restart, an
etcd restart. ``up --apiserver-arg=--flag=value`` adds flags to kube-apiserver's command line
(e.g. ``--watch-cache=false`` so that watches read etcd and a compaction answers 410).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from rmd_dev.pki import Pki, create_pki
from rmd_dev.provision import (
    FlinkInstall,
    PhaseLog,
    ProvisionError,
    etcd_binary,
    provision,
    provision_flink,
)

DEFAULT_DIR = Path(".devcluster")
STARTUP_TIMEOUT = 60.0
STOP_GRACE = 10.0


class ClusterError(RuntimeError):
    """A step of ``up``/``down`` failed; the message names the step and the log to read."""


@dataclass
class Component:
    name: str
    pid: int
    ports: dict[str, int]
    log: str
    argv0: str
    start_ticks: int  # field 22 of /proc/PID/stat: tells a reused pid from ours
    argv: list[str] = field(default_factory=list)  # the whole command line, for restart
    env: dict[str, str] | None = None


@dataclass
class ClusterState:
    """What ``up`` started, as written to ``DIR/state.json``."""

    dir: str
    server: str
    etcd_url: str
    kubeconfig: str
    node_names: list[str]
    components: list[Component] = field(default_factory=list)
    flink_home: str = ""  # set by ``up --flink``: FLINK_HOME and the entrypoint stand-in
    flink_entrypoint: str = ""

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        raw = json.loads(path.read_text())
        comps = [Component(**c) for c in raw.pop("components", [])]
        return cls(**raw, components=comps)


def state_path(directory: Path) -> Path:
    return directory / "state.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[0], int(fields[19])


def process_alive(component: Component) -> bool:
    """True if ``component.pid`` is still the process we started (pids get reused)."""
    stat = _proc_stat(component.pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return stat[1] == component.start_ticks


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    token: str,
    ca: Path | None = None,
    user: str = "admin",
    namespace: str = "default",
) -> Path:
    """A kubeconfig with one bearer-token user; ``ca`` None for a plain-HTTP server."""
    certificate = f"    certificate-authority: {ca}\n" if ca is not None else ""
    path.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: rmd-dev\n"
        "  cluster:\n"
        f"    server: {server}\n"
        f"{certificate}"
        "users:\n"
        f"- name: {user}\n"
        "  user:\n"
        f"    token: {token}\n"
        "contexts:\n"
        "- name: rmd-dev\n"
        "  context:\n"
        "    cluster: rmd-dev\n"
        f"    user: {user}\n"
        f"    namespace: {namespace}\n"
        "current-context: rmd-dev\n"
    )
    path.chmod(0o600)
    return path


def _wait_http(
    url: str,
    *,
    what: str,
    log: Path,
    component: Component,
    context: ssl.SSLContext | None = None,
    token: str | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not process_alive(component):
            raise ClusterError(f"step '{what}': {component.name} exited; see the log {log}")
        request = urllib.request.Request(url)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as answer:
                if answer.status == 200:
                    return
                last = f"HTTP {answer.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ClusterError(f"step '{what}': not ready after {timeout:.0f} s ({last}); see {log}")


class ControlPlane:
    """Drives ``up``, ``down`` and ``status`` for one cluster directory."""

    def __init__(self, directory: Path, *, out: TextIO | None = None) -> None:
        self.dir = directory.resolve()
        self.out = out or sys.stderr
        self.logs = self.dir / "logs"
        self._phases = PhaseLog(log_path=self.dir / "provision.log", out=self.out)

    # ------------------------------------------------------------------ helpers
    def _start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ports: dict[str, int],
        env: dict[str, str] | None = None,
    ) -> Component:
        log = self.logs / f"{name}.log"
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                list(argv),
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=self.dir,
            )
        stat = _proc_stat(proc.pid)
        return Component(
            name=name,
            pid=proc.pid,
            ports=ports,
            log=str(log),
            argv0=argv[0],
            start_ticks=stat[1] if stat else -1,
            argv=list(argv),
            env=env,
        )

    def _phase(self, text: str) -> None:
        self._phases.phase(text)

    # ------------------------------------------------------------------ up
    def up(
        self,
        *,
        nodes: int = 2,
        unpullable_images: Sequence[str] = (),
        emulator: bool = True,
        flink_version: str | None = None,
        apiserver_args: Sequence[str] = (),
    ) -> ClusterState:
        """Start the cluster; with ``flink_version`` also provision a JDK and that Flink;
        ``apiserver_args`` are added to kube-apiserver's command line."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        flink: FlinkInstall | None = None
        if flink_version is not None:
            try:
                flink = provision_flink(log=self._phases, version=flink_version)
            except ProvisionError as exc:
                raise ClusterError(str(exc)) from exc
        existing = state_path(self.dir)
        if existing.exists():
            state = ClusterState.load(existing)
            if all(process_alive(c) for c in state.components):
                self._phase(f"cluster in {self.dir} is already running")
                if flink is not None:
                    _record_flink(state, flink)
                    state.save(existing)
                return state
            self._phase("a previous cluster here died: stopping its leftovers")
            self.down()
        try:
            bin_dir = provision(log=self._phases)
        except ProvisionError as exc:
            raise ClusterError(str(exc)) from exc
        etcd = etcd_binary()
        assert etcd is not None  # provision() checked it
        started: list[Component] = []
        state = ClusterState(
            dir=str(self.dir), server="", etcd_url="", kubeconfig="", node_names=[]
        )
        if flink is not None:
            _record_flink(state, flink)
        try:
            self._up(
                state,
                started,
                bin_dir=bin_dir,
                etcd=etcd,
                nodes=nodes,
                unpullable_images=unpullable_images,
                emulator=emulator,
                apiserver_args=apiserver_args,
            )
        except BaseException:
            state.components = started
            self._stop_components(started)
            state_path(self.dir).unlink(missing_ok=True)
            raise
        return state

    def _up(
        self,
        state: ClusterState,
        started: list[Component],
        *,
        bin_dir: Path,
        etcd: Path,
        nodes: int,
        unpullable_images: Sequence[str],
        emulator: bool,
        apiserver_args: Sequence[str],
    ) -> None:
        self._phase("certificates and tokens")
        pki = create_pki(self.dir / "pki")
        token = pki.admin_token()

        self._phase("etcd: starting")
        client_port, peer_port, metrics_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        data_dir = self.dir / "etcd-data"
        etcd_comp = self._start(
            "etcd",
            [
                str(etcd),
                "--name",
                "rmd",
                "--data-dir",
                str(data_dir),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"rmd=http://127.0.0.1:{peer_port}",
                "--listen-metrics-urls",
                f"http://127.0.0.1:{metrics_port}",
            ],
            ports={"client": client_port, "peer": peer_port, "metrics": metrics_port},
        )
        started.append(etcd_comp)
        self._save(state, started)
        _wait_http(f"{etcd_url}/health", what="etcd", log=Path(etcd_comp.log), component=etcd_comp)
        state.etcd_url = etcd_url

        self._phase("kube-apiserver: starting")
        secure_port = free_port()
        server = f"https://127.0.0.1:{secure_port}"
        api_comp = self._start(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={secure_port}",
                "--advertise-address=127.0.0.1",
                "--insecure-port=0",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki.apiserver_crt}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_crt}",
                f"--token-auth-file={pki.tokens_csv}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
                "ResourceQuota",
                f"--cert-dir={self.dir / 'pki' / 'apiserver-certs'}",
                *apiserver_args,
            ],
            ports={"secure": secure_port},
        )
        started.append(api_comp)
        self._save(state, started)
        context = ssl.create_default_context(cafile=str(pki.ca_crt))
        _wait_http(
            f"{server}/readyz",
            what="kube-apiserver",
            log=Path(api_comp.log),
            component=api_comp,
            context=context,
            token=token,
        )
        state.server = server

        kubeconfig = self.dir / "kubeconfig"
        write_kubeconfig(kubeconfig, server=server, ca=pki.ca_crt, token=token)
        state.kubeconfig = str(kubeconfig)

        self._phase("kube-controller-manager and kube-scheduler: starting")
        cm_port, sched_port = free_port(), free_port()
        cm = self._start(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                "--port=0",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodelifecycle",
                "--concurrent-gc-syncs=5",
                f"--cert-dir={self.dir / 'pki' / 'cm-certs'}",
            ],
            ports={"secure": cm_port},
        )
        started.append(cm)
        sched = self._start(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--port=0",
                "--leader-elect=false",
                f"--cert-dir={self.dir / 'pki' / 'sched-certs'}",
            ],
            ports={"secure": sched_port},
        )
        started.append(sched)
        self._save(state, started)

        self._phase(f"nodes: creating {nodes} Ready fake node(s)")
        from rmd_dev import nodes as node_objects

        node_names = [f"rmd-node-{i}" for i in range(1, nodes + 1)]
        asyncio.run(node_objects.setup_cluster(kubeconfig=kubeconfig, node_names=node_names))
        state.node_names = node_names
        for comp in (cm, sched):
            if not process_alive(comp):
                raise ClusterError(f"step '{comp.name}': exited; see the log {comp.log}")

        if emulator and importlib.util.find_spec("rmd_dev.emulator.main") is not None:
            self._phase("node emulator: starting")
            argv = [
                sys.executable,
                "-m",
                "rmd_dev.emulator",
                "--kubeconfig",
                str(kubeconfig),
                "--state-dir",
                str(self.dir / "emulator"),
                "--nodes",
                ",".join(node_names),
            ]
            if unpullable_images:
                argv += ["--unpullable-images", ",".join(unpullable_images)]
            emu = self._start("node-emulator", argv, ports={})
            started.append(emu)
        self._save(state, started)
        self._phase(f"ready: API server {server}")

    def _save(self, state: ClusterState, started: list[Component]) -> None:
        state.components = list(started)
        state.save(state_path(self.dir))

    # ------------------------------------------------------------------ restart
    def restart(self, name: str, *, down_for: float = 0.0) -> Component:
        """Stop the component ``name`` and start it again with the same command line and
        ports after ``down_for`` seconds; returns once it is healthy again (etcd, the API
        server) or started (the others)."""
        path = state_path(self.dir)
        if not path.exists():
            raise ClusterError(f"no cluster in {self.dir}")
        state = ClusterState.load(path)
        found = [c for c in state.components if c.name == name]
        if not found:
            known = ", ".join(c.name for c in state.components)
            raise ClusterError(f"no component {name!r} in {self.dir}: use one of {known}")
        old = found[0]
        if not old.argv:
            raise ClusterError(
                f"{name}: its command line was not recorded (started by an older rmd): "
                "run 'down' and 'up' again"
            )
        self._stop_components([old])
        ports = list(old.ports.values())
        deadline = time.monotonic() + 10
        while any(not port_is_free(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(max(0.0, down_for))
        new = self._start(name, old.argv, ports=dict(old.ports), env=old.env)
        state.components = [new if c is old else c for c in state.components]
        state.save(path)
        if name == "etcd":
            _wait_http(f"{state.etcd_url}/health", what="etcd", log=Path(new.log), component=new)
        elif name == "kube-apiserver":
            pki = Pki(self.dir / "pki")
            _wait_http(
                f"{state.server}/readyz",
                what="kube-apiserver",
                log=Path(new.log),
                component=new,
                context=ssl.create_default_context(cafile=str(pki.ca_crt)),
                token=pki.admin_token(),
            )
        return new

    # ------------------------------------------------------------------ down
    def _stop_components(self, components: Sequence[Component]) -> list[str]:
        """Stop in reverse start order; return the names that had to be killed."""
        killed: list[str] = []
        for comp in reversed(components):
            if not process_alive(comp):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(comp.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while process_alive(comp) and time.monotonic() < deadline:
                _reap(comp.pid)
                time.sleep(0.05)
            if process_alive(comp):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(comp.pid, signal.SIGKILL)
                killed.append(comp.name)
            _reap(comp.pid)
        return killed

    def down(self) -> list[int]:
        """Stop everything ``up`` started here; returns the ports that are still busy."""
        path = state_path(self.dir)
        if not path.exists():
            return []
        state = ClusterState.load(path)
        self._stop_components(state.components)
        ports = [p for c in state.components for p in c.ports.values()]
        deadline = time.monotonic() + 10
        busy = [p for p in ports if not port_is_free(p)]
        while busy and time.monotonic() < deadline:
            time.sleep(0.1)
            busy = [p for p in busy if not port_is_free(p)]
        path.unlink(missing_ok=True)
        return busy

    # ------------------------------------------------------------------ status
    def status(self) -> ClusterState | None:
        path = state_path(self.dir)
        return ClusterState.load(path) if path.exists() else None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _record_flink(state: ClusterState, flink: FlinkInstall) -> None:
    state.flink_home = str(flink.home)
    state.flink_entrypoint = str(flink.entrypoint)


def export_line(state: ClusterState) -> str:
    """``export KUBECONFIG=...``, after ``--flink`` preceded by the FLINK_HOME and
    FLINK_ENTRYPOINT lines (the KUBECONFIG line stays the last one)."""
    lines = []
    if state.flink_home:
        lines.append(f"export FLINK_HOME={state.flink_home}")
        lines.append(f"export FLINK_ENTRYPOINT={state.flink_entrypoint}")
    lines.append(f"export KUBECONFIG={state.kubeconfig}")
    return "\n".join(lines)


def describe(state: ClusterState, *, alive: Callable[[Component], bool] = process_alive) -> str:
    lines = [
        f"cluster dir: {state.dir}",
        f"API server:  {state.server}",
        f"etcd:        {state.etcd_url}",
        f"nodes:       {', '.join(state.node_names)}",
        "",
    ]
    lines.append(f"{'COMPONENT':<26}{'PID':>8}  {'STATE':<8}PORTS")
    for comp in state.components:
        ports = ", ".join(f"{k}={v}" for k, v in comp.ports.items()) or "-"
        running = "running" if alive(comp) else "DEAD"
        lines.append(f"{comp.name:<26}{comp.pid:>8}  {running:<8}{ports}")
    lines += ["", export_line(state)]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_DIR",
    "ClusterError",
    "ClusterState",
    "Component",
    "ControlPlane",
    "Pki",
    "describe",
    "export_line",
    "process_alive",
    "write_kubeconfig",
]
