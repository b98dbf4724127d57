"""A TaskManager's JVM command, worked out once by Flink's own scripts: the launch plan.

Started as Flink's native mode starts it (``kubernetes-taskmanager.sh``), a TaskManager
container runs Flink's shell scripts before its JVM: ``kubernetes-taskmanager.sh`` sources
``config.sh``, which runs a helper JVM (``BashJavaUtils UPDATE_AND_GET_FLINK_CONFIGURATION``)
and ``java -XshowSettings``, then execs ``flink-console.sh``, which sources ``config.sh``
again (a second helper JVM) and finally execs the TaskManager's JVM. On a busy node those
helpers cost seconds of a TaskManager's start, in every pod, to compute the same answer.

The daemon runs the scripts once, with a stand-in ``java`` that records the final command
instead of running it (:mod:`rmd.flink.launch_recording`), and gives every pod the result:
:data:`PLAN_FILE` (JSON) in the ``flink-config`` ConfigMap, next to ``config.yaml``.

The agent uses it only in a pod that is what the plan was made for: every environment
variable the scripts read has the value it was recorded with, and ``config.yaml``, Flink's
scripts and the jars in ``lib/`` are the same files (digests). It then starts the JVM
through the image's entrypoint (pass-through: jemalloc, user switch and the like still
apply) with the recorded arguments, followed by the pod's own; on any difference it runs
the scripts and says why. What the scripts exported to the JVM's environment comes along;
the java, the host name and the log file's number are the pod's own (:func:`apply_plan`).

Pure, apart from reading the few files the digests cover; standard library only (the agent
imports it before it starts the TaskManager).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PLAN_FILE = "rmd-taskmanager-launch.json"  # in the flink-config ConfigMap
SCRIPT = "kubernetes-taskmanager.sh"  # what the pod's command starts, on the image's PATH
SERVICE = "kubernetes-taskmanager"  # flink-console.sh's service name for it
RUNNER_CLASS = "org.apache.flink.kubernetes.taskmanager.KubernetesTaskExecutorRunner"
# The scripts a TaskManager's start runs (sourced or exec'd), in $FLINK_HOME/bin.
SCRIPTS = (SCRIPT, "flink-console.sh", "config.sh", "bash-java-utils.sh")
PLAN_VERSION = 1
# Placeholders in a plan's words, replaced in the pod.
JAVA_MARKER = "@rmd-java@"  # the java the scripts pick ($JAVA_HOME/bin/java, else java)
HOSTNAME_MARKER = "@rmd-hostname@"  # $HOSTNAME (config.sh: `hostname` when unset)
LOG_ID_MARKER = "@rmd-log-id@"  # flink-console.sh's number of live TaskManagers before this one
# Read by bash itself before a script runs a line; compared like the scripts' own variables.
SHELL_VARIABLES = ("BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "IFS", "CDPATH", "GLOBIGNORE")
# Read by the official image's entrypoint before it passes the command through: it would
# change config.yaml (where writable), which the scripts read.
ENTRYPOINT_VARIABLES = ("FLINK_PROPERTIES",)
# Variables the plan replaces rather than compares.
SUBSTITUTED = frozenset({"HOSTNAME", "JAVA_RUN"})
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_COMMENT = re.compile(r"^\s*#.*$", re.MULTILINE)


class PlanError(ValueError):
    """The plan cannot be read (a different rmd wrote it, or it was cut)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchPlan:
    """What ``kubernetes-taskmanager.sh`` execs, for pods like the one it was recorded for."""

    arguments: tuple[str, ...]  # java's words up to the pod's own arguments (excluded)
    exported: tuple[tuple[str, str], ...]  # what the scripts put into the JVM's environment
    inputs: tuple[tuple[str, str | None], ...]  # variables the scripts read: value, None unset
    flink_home: str
    conf_dir: str
    conf_digest: str  # config.yaml
    flink_digest: str  # the scripts and lib/'s jars
    pid_file: str  # flink-console.sh's pid file: the log file's number counts its live pids

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": PLAN_VERSION,
                "arguments": list(self.arguments),
                "exported": dict(self.exported),
                "inputs": dict(self.inputs),
                "flinkHome": self.flink_home,
                "confDir": self.conf_dir,
                "confDigest": self.conf_digest,
                "flinkDigest": self.flink_digest,
                "pidFile": self.pid_file,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> LaunchPlan:
        try:
            raw = json.loads(text)
            if raw["version"] != PLAN_VERSION:
                raise PlanError(f"plan version {raw['version']!r}, this agent reads {PLAN_VERSION}")
            inputs = raw["inputs"]
            exported = raw["exported"]
            plan = cls(
                arguments=tuple(_strings(raw["arguments"])),
                exported=tuple((str(k), str(v)) for k, v in exported.items()),
                inputs=tuple((str(k), None if v is None else str(v)) for k, v in inputs.items()),
                flink_home=str(raw["flinkHome"]),
                conf_dir=str(raw["confDir"]),
                conf_digest=str(raw["confDigest"]),
                flink_digest=str(raw["flinkDigest"]),
                pid_file=str(raw["pidFile"]),
            )
        except PlanError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise PlanError(f"{PLAN_FILE} is not a launch plan: {error!r}") from None
        if not plan.arguments or plan.arguments[0] != JAVA_MARKER:
            raise PlanError(f"{PLAN_FILE} does not start with java")
        return plan


@dataclass(frozen=True, slots=True)
class Launch:
    """The pod's command and environment under a plan."""

    command: tuple[str, ...]
    env: dict[str, str]
    pid_file: str
    log_id: int


def referenced_variables(script_texts: Iterable[str]) -> frozenset[str]:
    """Every ``$NAME`` / ``${NAME`` the scripts mention outside comments, and what bash and
    the image's entrypoint read; more than the scripts strictly read from the environment
    (their own variables too), which only makes the comparison stricter."""
    names: set[str] = set(SHELL_VARIABLES) | set(ENTRYPOINT_VARIABLES)
    for text in script_texts:
        names.update(_VARIABLE.findall(_COMMENT.sub("", text)))
    return frozenset(names - SUBSTITUTED)


def script_texts(flink_home: Path) -> list[str]:
    """The scripts of :data:`SCRIPTS`; OSError when one is missing."""
    return [(flink_home / "bin" / name).read_text(encoding="utf-8") for name in SCRIPTS]


def conf_digest(conf_dir: Path) -> str:
    """config.yaml's digest (what the scripts read of the configuration); OSError if absent."""
    return hashlib.sha256((conf_dir / "config.yaml").read_bytes()).hexdigest()


def flink_digest(flink_home: Path) -> str:
    """The digest of Flink's scripts (:data:`SCRIPTS`) and the names of ``lib/``'s jars (the
    classpath ``config.sh`` builds); OSError when a script is missing."""
    digest = hashlib.sha256()
    for name in SCRIPTS:
        digest.update(name.encode() + b"\0" + (flink_home / "bin" / name).read_bytes() + b"\0")
    lib = flink_home / "lib"
    jars = sorted(
        str(Path(root, name).relative_to(lib))
        for root, _dirs, files in os.walk(lib)
        for name in files
        if name.endswith(".jar")
    )
    digest.update("\0".join(jars).encode())
    return digest.hexdigest()


def java_run(env: Mapping[str, str]) -> str:
    """``JAVA_RUN`` as ``bash-java-utils.sh``'s ``setJavaRun`` sets it when the configuration
    names no ``env.java.home`` (a plan is only made then)."""
    home = env.get("JAVA_HOME", "")
    return f"{home}/bin/java" if home and Path(home).is_dir() else "java"


def log_id(pid_file: Path) -> int:
    """``flink-console.sh``'s number for the log file: the lines of its pid file while any
    process listed there lives (the file is removed when none does), else 0."""
    try:
        lines = pid_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    if not any(_alive(line) for line in lines):
        with contextlib.suppress(OSError):
            pid_file.unlink()
        return 0
    return len(lines)


def mismatch(plan: LaunchPlan, *, command: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Why ``plan`` does not fit this pod's ``command`` and ``env``; None when it does."""
    if len(command) < 2 or Path(command[1]).name != SCRIPT:
        return f"the command does not start {SCRIPT} through the entrypoint"
    for name, expected in plan.inputs:
        actual = env.get(name)
        if actual != expected:
            return f"${name} is {_shown(actual)} here, the plan was made for {_shown(expected)}"
    if env.get("FLINK_CONF_DIR") != plan.conf_dir:
        return f"$FLINK_CONF_DIR is not {plan.conf_dir}"
    try:
        if conf_digest(Path(plan.conf_dir)) != plan.conf_digest:
            return f"{plan.conf_dir}/config.yaml differs from the one the plan was made with"
        if flink_digest(Path(plan.flink_home)) != plan.flink_digest:
            return f"Flink's scripts or lib/ in {plan.flink_home} differ from the plan's"
    except OSError as error:
        return f"cannot read what the plan was made from: {error}"
    return None


def apply_plan(
    plan: LaunchPlan, *, command: Sequence[str], env: Mapping[str, str], hostname: str
) -> Launch | str:
    """The pod's launch under ``plan``: ``command[0]`` (the image's entrypoint), the plan's
    words with this pod's java, host name and log number, then the pod's own arguments
    (``command[2:]``, after the script); or why the plan does not fit (see :func:`mismatch`)."""
    reason = mismatch(plan, command=command, env=env)
    if reason is not None:
        return reason
    java = java_run(env)
    number = log_id(Path(plan.pid_file))
    host = env.get("HOSTNAME") or hostname

    def fill(word: str) -> str:
        return (
            word.replace(JAVA_MARKER, java)
            .replace(HOSTNAME_MARKER, host)
            .replace(LOG_ID_MARKER, str(number))
        )

    launched_env = dict(env)
    launched_env.update({name: fill(value) for name, value in plan.exported})
    launched_env["JAVA_HOME"] = env.get("JAVA_HOME", "")  # setJavaHome exports it, maybe empty
    arguments = [fill(word) for word in plan.arguments]
    return Launch(
        command=(command[0], *arguments, *command[2:]),
        env=launched_env,
        pid_file=plan.pid_file,
        log_id=number,
    )


def record_pid(pid_file: str, pid: int) -> None:
    """Append ``pid`` to the pid file, as ``flink-console.sh`` does (best effort)."""
    try:
        Path(pid_file).parent.mkdir(parents=True, exist_ok=True)
        with open(pid_file, "a", encoding="utf-8") as file:
            file.write(f"{pid}\n")
    except OSError:
        pass


def _alive(line: str) -> bool:
    try:
        os.kill(int(line.strip()), 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("arguments must be a list of strings")
    return list(value)


def _shown(value: str | None) -> str:
    return "unset" if value is None else repr(value)
