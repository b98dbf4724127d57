"""Install and build what the local control plane needs, once, and cache it.

etcd comes from Debian's ``etcd-server`` package; kube-apiserver, kube-controller-manager
and kube-scheduler v1.20.2 are built from Debian bookworm's ``kubernetes`` source package
(the only kube-apiserver the package registries provide). The three binaries are cached
under ``$XDG_CACHE_HOME/rmd/kubernetes-v1.20.2/bin`` so that only the first run pays the
build (about four minutes on two cores).

With ``--flink`` (``rmd dev-cluster up --flink``) it also provisions real Apache Flink: a
JDK from Debian's ``openjdk-17-jdk-headless`` when ``java`` or ``javac`` is missing, and
Flink's own distribution from the PyPI wheels ``apache-flink`` and
``apache-flink-libraries`` (``pip download --no-deps``, through the index pip is configured
for), unpacked into ``$XDG_CACHE_HOME/rmd/flink-<version>/`` so that
``FLINK_HOME=.../pyflink``. See :func:`provision_flink`.

This module uses the standard library only, so it can run before the project is installed:
``python -m rmd_dev.provision``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

KUBERNETES_VERSION = "v1.20.2"
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
APT_PACKAGES = (
    "etcd-server",
    "golang-go",
    "dpkg-dev",
    "golang-github-modern-go-reflect2-dev",
    "openssl",
)
DEB_SRC_FILE = Path("/etc/apt/sources.list.d/rmd-deb-src.sources")
DEB_SRC_STANZA = """\
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
OPENAPI_EXCLUDED = ("vendor/k8s.io/code-generator", "vendor/k8s.io/sample-apiserver")
DEFAULT_FLINK_VERSION = "2.3.0"
JDK_PACKAGE = "openjdk-17-jdk-headless"  # bookworm's only JDK; Flink 1.20 and 2.x run on it
FLINK_DISTRIBUTIONS = ("apache-flink", "apache-flink-libraries")
FLINK_COMPLETE_MARKER = ".rmd-complete"
# Debian's Prometheus server and promtool, for the metrics tests (`promtool check metrics`,
# a real Prometheus discovering the daemon); installing it starts nothing.
PROMETHEUS_PACKAGE = "prometheus"


class ProvisionError(RuntimeError):
    """A provisioning step failed; the message names the step and its log."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rmd"


def kube_bin_dir() -> Path:
    return cache_root() / f"kubernetes-{KUBERNETES_VERSION}" / "bin"


def etcd_binary() -> Path | None:
    found = shutil.which("etcd")
    return Path(found) if found else None


def kube_binaries_present() -> bool:
    return all((kube_bin_dir() / name).is_file() for name in KUBE_BINARIES)


@dataclass(frozen=True)
class OutputCount:
    """What to count in a running command's output for the progress line: lines matching
    ``pattern``, shown as ``<n> <noun>``."""

    pattern: re.Pattern[str]
    noun: str

    def count(self, text: str) -> int:
        return sum(1 for line in text.splitlines() if self.pattern.fullmatch(line))


# `go build -v` prints the import path of every package as it is compiled.
GO_PACKAGES = OutputCount(re.compile(r"[a-z0-9][\w.\-]*(/[\w.\-]+)*"), "packages compiled")
_SPINNER = "|/-\\"
_CLEAR_LINE = "\r\x1b[K"


def progress_line(*, phase: str, elapsed: float, frame: int, counted: str | None) -> str:
    """The line redrawn on a terminal while a command runs: time, phase, spinner, count."""
    line = f"[{elapsed:7.1f}s] {phase} {_SPINNER[frame % len(_SPINNER)]}"
    return f"{line} {counted}" if counted else line


@dataclass
class PhaseLog:
    """Prints one line per phase with the elapsed time, and keeps every command's output.

    ``live`` (default: when ``out`` is a terminal): while a command runs, one line is redrawn
    in place every ``refresh`` seconds with the elapsed time, the phase, a spinner and, for
    commands run with ``count``, how many of its output lines matched (packages compiled).
    Otherwise only the plain phase lines are printed, for logs and CI.
    """

    log_path: Path
    out: TextIO = field(default_factory=lambda: sys.stderr)
    started: float = field(default_factory=time.monotonic)
    live: bool | None = None
    refresh: float = 0.5
    _phase: str = ""

    def __post_init__(self) -> None:
        if self.live is None:
            isatty = getattr(self.out, "isatty", None)
            self.live = bool(isatty and isatty())

    def phase(self, name: str) -> None:
        self._phase = name
        print(f"[{self._elapsed():7.1f}s] {name}", file=self.out, flush=True)
        with self.log_path.open("a") as log:
            log.write(f"\n==== {name}\n")

    def run(
        self,
        step: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        count: OutputCount | None = None,
    ) -> None:
        with self.log_path.open("a") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            output_from = log.tell()
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            try:
                returncode = self._wait(process, count=count, output_from=output_from)
            finally:
                if process.poll() is None:  # interrupted: take the command down with us
                    process.kill()
                    process.wait()
        if returncode != 0:
            raise ProvisionError(
                f"step '{step}' failed (exit {returncode}) running "
                f"{argv[0]}; see the log {self.log_path}"
            )

    def _wait(
        self, process: subprocess.Popen[bytes], *, count: OutputCount | None, output_from: int
    ) -> int:
        if not self.live:
            return process.wait()
        frame = 0
        try:
            while True:
                try:
                    return process.wait(timeout=self.refresh)
                except subprocess.TimeoutExpired:
                    counted = None
                    if count is not None:
                        counted = f"{count.count(self._output_since(output_from))} {count.noun}"
                    line = progress_line(
                        phase=self._phase, elapsed=self._elapsed(), frame=frame, counted=counted
                    )
                    self.out.write(_CLEAR_LINE + line)
                    self.out.flush()
                    frame += 1
        finally:
            if frame:
                self.out.write(_CLEAR_LINE)
                self.out.flush()

    def _output_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _elapsed(self) -> float:
        return time.monotonic() - self.started


def _apt_missing(packages: Sequence[str]) -> list[str]:
    missing = []
    for name in packages:
        probe = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if "install ok installed" not in probe.stdout:
            missing.append(name)
    return missing


def _require_root(step: str) -> None:
    if os.geteuid() != 0:
        raise ProvisionError(
            f"step '{step}' needs root to run apt-get; run 'rmd dev-cluster up' as root "
            "or install the packages yourself"
        )


def ensure_packages(log: PhaseLog, *, need_build: bool) -> None:
    wanted = list(APT_PACKAGES if need_build else ("etcd-server", "openssl"))
    if shutil.which("kubectl") is None:
        wanted.append("kubernetes-client")
    missing = _apt_missing(wanted)
    have_src = DEB_SRC_FILE.exists()
    if not missing and (have_src or not need_build):
        log.phase("apt packages: already installed")
        return
    _require_root("apt packages")
    log.phase(f"apt packages: installing {' '.join(missing) or '(deb-src only)'}")
    if need_build and not have_src:
        DEB_SRC_FILE.write_text(DEB_SRC_STANZA)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log.run("apt-get update", ["apt-get", "update"], env=env)
    if missing:
        log.run(
            "apt-get install",
            ["apt-get", "install", "-y", "--no-install-recommends", *missing],
            env=env,
        )


def _openapi_packages(src: Path) -> list[str]:
    """Package dirs (import paths) whose Go files carry a ``+k8s:openapi-gen=`` tag."""
    found = subprocess.run(
        [
            "grep",
            "-rl",
            "--include=*.go",
            "--exclude-dir=vendor",
            "--exclude-dir=.git",
            "+k8s:openapi-gen=",
            ".",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        check=False,
    )
    dirs: set[str] = set()
    for line in found.stdout.splitlines():
        rel = os.path.dirname(line.removeprefix("./"))
        if rel.startswith("staging/src/"):
            rel = "vendor/" + rel.removeprefix("staging/src/")
        if any(rel == ex or rel.startswith(ex + "/") for ex in OPENAPI_EXCLUDED):
            continue
        dirs.add("k8s.io/kubernetes/" + rel)
    return sorted(dirs)


def build_kubernetes(log: PhaseLog) -> None:
    target = kube_bin_dir()
    work_parent = cache_root()
    work_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=work_parent))
    try:
        log.phase("kubernetes source: downloading Debian's source package")
        log.run(
            "download source",
            ["apt-get", "source", "--download-only", "kubernetes"],
            cwd=work,
        )
        dsc = sorted(work.glob("kubernetes_*.dsc"))
        if not dsc:
            raise ProvisionError(f"step 'download source' produced no .dsc; see {log.log_path}")
        log.phase("kubernetes source: unpacking")
        src = work / "src"
        log.run("unpack source", ["dpkg-source", "-x", dsc[0].name, "src"], cwd=work)

        log.phase("kubernetes source: replacing vendored reflect2 with Debian's v1.0.2")
        vendored = src / "vendor/github.com/modern-go/reflect2"
        shutil.rmtree(vendored, ignore_errors=True)
        shutil.copytree("/usr/share/gocode/src/github.com/modern-go/reflect2", vendored)
        (vendored / "go.mod").unlink(missing_ok=True)

        gopath = work / "gopath"
        (gopath / "src/k8s.io").mkdir(parents=True)
        pkg_root = gopath / "src/k8s.io/kubernetes"
        pkg_root.symlink_to(src)
        env = dict(
            os.environ,
            GOPATH=str(gopath),
            GOCACHE=str(work / "gocache"),
            GO111MODULE="off",
            GOPROXY="off",
            GOFLAGS="",
            CGO_ENABLED="0",
            # Go resolves vendor/ in GOPATH mode only when the working directory is seen
            # through the GOPATH symlink; it trusts $PWD for that.
            PWD=str(pkg_root),
        )

        log.phase("openapi: building openapi-gen")
        openapi_gen = work / "openapi-gen"
        log.run(
            "build openapi-gen",
            [
                "go",
                "build",
                "-v",
                "-o",
                str(openapi_gen),
                "./vendor/k8s.io/kube-openapi/cmd/openapi-gen",
            ],
            cwd=pkg_root,
            env=env,
            count=GO_PACKAGES,
        )
        packages = _openapi_packages(src)
        log.phase(f"openapi: generating definitions for {len(packages)} packages")
        log.run(
            "generate openapi",
            [
                str(openapi_gen),
                "-i",
                ",".join(packages),
                "-p",
                "k8s.io/kubernetes/pkg/generated/openapi",
                "-O",
                "zz_generated.openapi",
                "-o",
                str(gopath / "src"),
                "-h",
                "vendor/k8s.io/code-generator/hack/boilerplate.go.txt",
                "-r",
                str(work / "api-rules-report.txt"),
            ],
            cwd=pkg_root,
            env=env,
        )

        log.phase("build: kube-apiserver, kube-controller-manager, kube-scheduler (minutes)")
        version_pkgs = (
            "k8s.io/kubernetes/vendor/k8s.io/component-base/version",
            "k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version",
        )
        ldflags = ["-s", "-w"]
        for pkg in version_pkgs:
            ldflags += [
                f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
                f"-X {pkg}.gitMajor=1",
                f"-X {pkg}.gitMinor=20",
            ]
        out_dir = work / "bin"
        out_dir.mkdir()
        log.run(
            "go build",
            [
                "go",
                "build",
                "-v",
                "-ldflags",
                " ".join(ldflags),
                "-o",
                str(out_dir) + "/",
                *(f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_BINARIES),
            ],
            cwd=pkg_root,
            env=env,
            count=GO_PACKAGES,
        )
        target.mkdir(parents=True, exist_ok=True)
        for name in KUBE_BINARIES:
            shutil.copy2(out_dir / name, target / (name + ".tmp"))
            os.replace(target / (name + ".tmp"), target / name)
        log.phase(f"build: done, binaries cached in {target}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def provision(*, log: PhaseLog) -> Path:
    """Make sure etcd, the three Kubernetes binaries and kubectl exist; return the bin dir."""
    need_build = not kube_binaries_present()
    ensure_packages(log, need_build=need_build)
    if etcd_binary() is None:
        raise ProvisionError("step 'apt packages' left no etcd binary on PATH")
    if need_build:
        build_kubernetes(log)
    else:
        log.phase(f"kubernetes {KUBERNETES_VERSION}: using cached binaries in {kube_bin_dir()}")
    return kube_bin_dir()


# ---------------------------------------------------------------------------- Flink


@dataclass(frozen=True)
class FlinkInstall:
    """A provisioned Flink: ``home`` is FLINK_HOME, ``entrypoint`` plays the image's
    ``/docker-entrypoint.sh`` (see ``rmd_dev/flink/docker-entrypoint.sh``)."""

    version: str
    home: Path
    entrypoint: Path

    def export_lines(self) -> list[str]:
        return [f"export FLINK_HOME={self.home}", f"export FLINK_ENTRYPOINT={self.entrypoint}"]


def valid_flink_version(version: str) -> bool:
    """A release number such as 2.3.0 or 1.20.3 (it names a cache directory and a pip pin)."""
    return re.fullmatch(r"[0-9]+\.[0-9]+(\.[0-9]+)?", version) is not None


def flink_dir(version: str) -> Path:
    return cache_root() / f"flink-{version}"


def flink_home(version: str) -> Path:
    """FLINK_HOME of ``version`` in the cache (it may not be provisioned yet)."""
    return flink_dir(version) / "pyflink"


def flink_entrypoint() -> Path:
    """The package's stand-in for the Flink image's ``/docker-entrypoint.sh``."""
    return Path(__file__).resolve().parent / "flink" / "docker-entrypoint.sh"


def flink_present(version: str) -> bool:
    return (flink_dir(version) / FLINK_COMPLETE_MARKER).is_file()


def ensure_jdk(log: PhaseLog) -> None:
    """``java`` and ``javac`` on PATH, else Debian's JDK through apt-get."""
    _ensure_commands(log, step="jdk", package=JDK_PACKAGE, commands=("java", "javac"))


def ensure_prometheus(log: PhaseLog) -> None:
    """``prometheus`` and ``promtool`` on PATH, else Debian's ``prometheus`` package."""
    _ensure_commands(
        log, step="prometheus", package=PROMETHEUS_PACKAGE, commands=("prometheus", "promtool")
    )


def _ensure_commands(log: PhaseLog, *, step: str, package: str, commands: tuple[str, ...]) -> None:
    """``commands`` on PATH, else the Debian ``package`` that has them, through apt-get."""
    if all(shutil.which(command) for command in commands):
        log.phase(f"{step}: {' and '.join(commands)} already installed")
        return
    _require_root(step)
    log.phase(f"{step}: installing {package}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log.run("apt-get update", ["apt-get", "update"], env=env)
    log.run(
        f"apt-get install {step}",
        ["apt-get", "install", "-y", "--no-install-recommends", package],
        env=env,
    )
    if not all(shutil.which(command) for command in commands):
        raise ProvisionError(
            f"step '{step}' installed {package} but {'/'.join(commands)} are not on PATH"
        )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One provisioning of a Flink version at a time, across processes (test sessions)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unpack_wheel(wheel: Path, target: Path) -> None:
    """Unzip a wheel keeping the file modes it records (zipfile alone drops them), so
    Flink's ``bin/*.sh`` stay executable; shell scripts under ``bin/`` are made executable
    in any case (the libraries wheel records no modes)."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            extracted = Path(archive.extract(info, target))
            mode = (info.external_attr >> 16) & 0o7777
            if mode and not info.is_dir():
                extracted.chmod(mode)
            in_bin = extracted.parent.name == "bin" and extracted.suffix in (".sh", "")
            if in_bin and extracted.is_file():
                extracted.chmod(extracted.stat().st_mode | 0o755)


def unpack_libraries_sdist(sdist: Path, target: Path) -> None:
    """Flink 1.x publishes ``apache-flink-libraries`` as an sdist only: its
    ``deps/{lib,opt,plugins,licenses,bin}`` are what its setup.py installs as
    ``pyflink/{lib,...}``; unpack them there (no build needed)."""
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if len(parts) < 3 or parts[1] != "deps" or not (member.isfile() or member.isdir()):
                continue
            member.name = str(Path("pyflink", *parts[2:]))
            archive.extract(member, target, filter="data")


def provision_flink(*, log: PhaseLog, version: str = DEFAULT_FLINK_VERSION) -> FlinkInstall:
    """JDK plus Flink ``version`` unpacked from its PyPI wheels, cached; a second call with
    the same version only checks."""
    ensure_jdk(log)
    install = FlinkInstall(version=version, home=flink_home(version), entrypoint=flink_entrypoint())
    _make_executable(install.entrypoint)
    with _exclusive(cache_root() / f"flink-{version}.lock"):
        if flink_present(version):
            log.phase(f"flink {version}: using the cached FLINK_HOME {install.home}")
            return install
        target = flink_dir(version)
        staging = Path(tempfile.mkdtemp(prefix=f"flink-{version}-", dir=cache_root()))
        try:
            names = ", ".join(FLINK_DISTRIBUTIONS)
            log.phase(f"flink {version}: downloading the PyPI wheels {names}")
            wheels = staging / "wheels"
            log.run(
                "pip download flink",
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "--dest",
                    str(wheels),
                    *(f"{name}=={version}" for name in FLINK_DISTRIBUTIONS),
                ],
            )
            found = sorted(wheels.iterdir())
            if len(found) != len(FLINK_DISTRIBUTIONS):
                raise ProvisionError(
                    f"step 'pip download flink' gave {len(found)} files, expected "
                    f"{len(FLINK_DISTRIBUTIONS)} (is Flink {version} published for this "
                    f"Python?); see {log.log_path}"
                )
            log.phase(f"flink {version}: unpacking")
            unpacked = staging / "unpacked"
            for archive in found:
                if archive.name.endswith(".tar.gz"):
                    unpack_libraries_sdist(archive, unpacked)
                else:
                    unpack_wheel(archive, unpacked)
            if not (unpacked / "pyflink" / "bin" / "jobmanager.sh").is_file():
                raise ProvisionError(
                    f"step 'unpack flink': the wheels hold no pyflink/bin/jobmanager.sh; "
                    f"see {log.log_path}"
                )
            (unpacked / FLINK_COMPLETE_MARKER).write_text(version + "\n")
            shutil.rmtree(target, ignore_errors=True)  # a half-finished earlier attempt
            os.replace(unpacked, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.phase(f"flink {version}: FLINK_HOME {install.home}")
    return install


def _make_executable(path: Path) -> None:
    mode = path.stat().st_mode
    wanted = mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    if mode != wanted:
        with contextlib.suppress(PermissionError):
            path.chmod(wanted)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rmd_dev.provision",
        description="Install and build what the local control plane needs (cached).",
    )
    parser.add_argument("--flink", action="store_true", help="also provision a JDK and Flink")
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help="also install Debian's prometheus (the server and promtool, for the tests)",
    )
    parser.add_argument(
        "--flink-version",
        default=DEFAULT_FLINK_VERSION,
        help=f"Flink version with --flink (default {DEFAULT_FLINK_VERSION})",
    )
    args = parser.parse_args(argv)
    if not valid_flink_version(args.flink_version):
        parser.error(f"--flink-version {args.flink_version!r} is not a release number, e.g. 2.3.0")
    cache_root().mkdir(parents=True, exist_ok=True)
    log = PhaseLog(log_path=cache_root() / "provision.log")
    try:
        provision(log=log)
        if args.prometheus:
            ensure_prometheus(log)
        if args.flink:
            install = provision_flink(log=log, version=args.flink_version)
            print("\n".join(install.export_lines()))
    except ProvisionError as exc:
        print(f"rmd dev-cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
