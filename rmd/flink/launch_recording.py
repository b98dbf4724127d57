"""Record what Flink's ``kubernetes-taskmanager.sh`` execs, once, in the daemon.

The scripts run for real (their helper JVMs included) with the environment a TaskManager pod
will have and the configuration it will mount, but with a stand-in ``java`` on
``$JAVA_HOME``: it passes every call through to the real java except the one that starts
the TaskManager, whose arguments and environment it writes down instead. The result,
generalized where pods differ (java, host name, log number, the configuration directory),
is a :class:`~rmd.flink.launch_plan.LaunchPlan`.

A configuration whose result could differ from pod to pod is not recorded
(:class:`RecordingRefused`, with the reason): ``env.java.home`` set (the stand-in would not
be used), JVM options with shell syntax (``flink-console.sh`` evals them in the pod),
output redirected to files, or a variable the scripts read whose value only the pod knows
(a Secret, the downward API).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from rmd.flink.launch_plan import (
    HOSTNAME_MARKER,
    JAVA_MARKER,
    LOG_ID_MARKER,
    RUNNER_CLASS,
    SCRIPT,
    SERVICE,
    LaunchPlan,
    conf_digest,
    flink_digest,
    referenced_variables,
    script_texts,
)
from rmd.flink.taskmanager_memory import java_executable, output_tail

DEFAULT_TIMEOUT = 120.0  # two helper JVMs on a busy machine
# Flink configuration keys the scripts read that decide whether a plan can be made.
JAVA_HOME_KEY = "env.java.home"
PID_DIR_KEY = "env.pid.dir"
REDIRECT_KEY = "env.stdout-err.redirect-to-file"
JAVA_OPTIONS_KEYS = (
    "env.java.opts",
    "env.java.opts.all",
    "env.java.default-opts.all",
    "env.java.opts.taskmanager",
    "env.java.default-opts.taskmanager",
)
# Where the daemon's own environment stands in for the TaskManager image's (same image).
IMAGE_VARIABLES = ("PATH", "HOME", "JAVA_HOME", "FLINK_HOME")
_SHELL_SYNTAX = frozenset("$`\\*?[~;&|<>(){}'\"")
_NOT_EXPORTED = frozenset({"_", "SHLVL", "PWD", "OLDPWD", "JAVA_HOME"})
_RECORD = "RMD_LAUNCH_RECORD"
_REAL_JAVA = "RMD_LAUNCH_JAVA"
_STAND_IN = f"""#!/bin/sh
# rmd's stand-in java: records the TaskManager's start, passes everything else through.
for word in "$@"; do
  if [ "$word" = "{RUNNER_CLASS}" ]; then
    printf '%s\\0' "$@" > "${_RECORD}.args"
    env -0 > "${_RECORD}.env"
    exit 0
  fi
done
exec "${_REAL_JAVA}" "$@"
"""


class RecordingRefused(Exception):
    """No plan for this configuration; ``str(error)`` says why (pods then run the scripts)."""


def record_launch_plan(
    *,
    flink_home: Path,
    conf_files: Mapping[str, str],
    pod_env: Mapping[str, str | None],
    image_env: Mapping[str, str],
    conf_dir: str,
    java_home_setting: str,
    pid_dir_setting: str,
    java_options: Sequence[str],
    redirect_to_file: bool,
    timeout: float = DEFAULT_TIMEOUT,
) -> LaunchPlan:
    """Run ``kubernetes-taskmanager.sh`` once and return its plan.

    ``conf_files``: the configuration directory the pods mount (``config.yaml`` at least), at
    ``conf_dir`` there. ``pod_env``: the TaskManager container's variables as the pod spec
    sets them, None where only the pod knows the value; ``image_env``: the image's (the
    daemon's, of :data:`IMAGE_VARIABLES`). ``java_home_setting``: ``env.java.home``;
    ``pid_dir_setting``: ``env.pid.dir``;
    ``java_options``: the ``env.java.(default-)opts*`` values. Raises
    :class:`RecordingRefused`."""
    if java_home_setting:
        raise RecordingRefused(f"{JAVA_HOME_KEY} is set (the scripts' java cannot be stood in for)")
    expected: dict[str, str] = {
        name: image_env[name] for name in IMAGE_VARIABLES if name in image_env
    }
    unknown = {name for name, value in pod_env.items() if value is None or "$(" in value}
    expected.update(
        {
            name: value
            for name, value in pod_env.items()
            if value is not None and name not in unknown
        }
    )
    for name in unknown:
        expected.pop(name, None)
    try:
        referenced = referenced_variables(script_texts(flink_home))
    except OSError as error:
        raise RecordingRefused(f"Flink's scripts cannot be read: {error}") from None
    if pod_only := sorted(referenced & unknown):
        raise RecordingRefused(
            f"${pod_only[0]} is read by Flink's scripts and only the pod knows its value"
        )
    options = [
        *java_options,
        expected.get("FLINK_ENV_JAVA_OPTS", ""),
        expected.get("FLINK_ENV_JAVA_OPTS_TM", ""),
    ]
    if any(_SHELL_SYNTAX & set(value) for value in options):
        raise RecordingRefused(
            "the JVM options hold shell syntax, which flink-console.sh evaluates in each pod"
        )
    if redirect_to_file or expected.get("STD_REDIRECT_TO_FILE", "").lower() == "true":
        raise RecordingRefused("the TaskManager's output is redirected to files")
    # env.java.home is unset here (refused above): $JAVA_HOME, else java on the PATH
    real_java = java_executable(java_home_setting=None, environ=expected)
    if real_java is None:
        raise RecordingRefused("no java: set JAVA_HOME or put java on the PATH")
    with tempfile.TemporaryDirectory(prefix="rmd-launch-") as scratch:
        work = Path(scratch)
        recording_conf = work / "conf"
        recording_conf.mkdir()
        for name, text in conf_files.items():
            (recording_conf / name).write_text(text, encoding="utf-8")
        stand_in_home = work / "jdk"
        (stand_in_home / "bin").mkdir(parents=True)
        stand_in = stand_in_home / "bin" / "java"
        stand_in.write_text(_STAND_IN, encoding="utf-8")
        stand_in.chmod(0o755)
        (work / "pids").mkdir()
        record = work / "record"
        env = {
            **expected,
            "JAVA_HOME": str(stand_in_home),
            "FLINK_CONF_DIR": str(recording_conf),
            "HOSTNAME": HOSTNAME_MARKER,
            "FLINK_PID_DIR": str(work / "pids"),  # a fresh one: log number 0
            _RECORD: str(record),
            _REAL_JAVA: real_java,
        }
        try:
            completed = subprocess.run(
                ["bash", str(flink_home / "bin" / SCRIPT)],
                env=env,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RecordingRefused(f"{SCRIPT} did not run: {error}") from None
        try:
            words = (work / "record.args").read_bytes().decode().split("\0")[:-1]
            environ = (work / "record.env").read_bytes().decode().split("\0")[:-1]
        except (OSError, UnicodeDecodeError):
            raise RecordingRefused(
                f"{SCRIPT} did not start the TaskManager (exit {completed.returncode}): "
                f"{output_tail(completed.stdout)}"
            ) from None
        if words[-3:] != [RUNNER_CLASS, "--configDir", str(recording_conf)]:
            raise RecordingRefused(f"{SCRIPT} started the TaskManager with unexpected arguments")

        def general(text: str) -> str:
            return (
                text.replace(str(stand_in), JAVA_MARKER)
                .replace(f"-0-{HOSTNAME_MARKER}", f"-{LOG_ID_MARKER}-{HOSTNAME_MARKER}")
                .replace(str(recording_conf), conf_dir)
            )

        arguments = (JAVA_MARKER, *(general(word) for word in words))
        exported: list[tuple[str, str]] = []
        for entry in environ:
            name, _, value = entry.partition("=")
            if name in _NOT_EXPORTED or name in (_RECORD, _REAL_JAVA) or env.get(name) == value:
                continue
            exported.append((name, general(value)))
        leftovers = [text for text in (*arguments, *(v for _, v in exported)) if scratch in text]
        if leftovers:
            raise RecordingRefused(f"the TaskManager's start names a scratch path: {leftovers[0]}")
        try:
            digest = conf_digest(recording_conf)
            flink = flink_digest(flink_home)
        except OSError as error:
            raise RecordingRefused(f"cannot digest the plan's files: {error}") from None
    ident = expected.get("FLINK_IDENT_STRING") or expected.get("USER") or ""
    pid_dir = expected.get("FLINK_PID_DIR") or pid_dir_setting or "/tmp"
    plan = LaunchPlan(
        arguments=arguments,
        exported=tuple(sorted(exported)),
        inputs=tuple((name, expected.get(name)) for name in sorted(referenced)),
        flink_home=str(flink_home),
        conf_dir=conf_dir,
        conf_digest=digest,
        flink_digest=flink,
        pid_file=f"{pid_dir}/flink-{ident}-{SERVICE}.pid",
    )
    return plan
