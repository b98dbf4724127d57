"""The TaskManager's JVM memory options, computed once by Flink's own code for every pod.

Flink's ``taskmanager.sh`` runs a helper JVM in every TaskManager container
(``BashJavaUtils GET_TM_RESOURCE_PARAMS``) to turn the memory configuration into JVM
options (``-Xmx``, ``-Xms``, ``-XX:MaxDirectMemorySize``, ``-XX:MaxMetaspaceSize``) and the
``-D taskmanager.memory.*`` dynamic properties that pin every derived size. Flink's native
Kubernetes ResourceManager does not: it computes both itself (``TaskExecutorProcessUtils``)
and starts the pod with ``kubernetes-taskmanager.sh``, the JVM options in the environment
variable ``FLINK_TM_JVM_MEM_OPTS`` and the properties on the command line.

rmd does the same with Flink's own code: the daemon runs that helper once, with the
configuration the TaskManagers get (the ``flink-config`` ConfigMap's ``config.yaml``) and the
arguments the pod passes, and every pod then starts without it. The result is the helper's
two lines exactly as ``taskmanager.sh`` would have read them.

Pure: :func:`parse_resource_params` (the helper's output → :class:`TaskManagerMemory`),
:func:`java_executable` (which ``java``, as Flink's ``config.sh`` picks it). I/O:
:func:`compute_taskmanager_memory` (writes a configuration directory, runs the JVM).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BASH_JAVA_UTILS_CLASS = "org.apache.flink.runtime.util.bash.BashJavaUtils"
GET_TM_RESOURCE_PARAMS = "GET_TM_RESOURCE_PARAMS"
RESULT_PREFIX = "BASH_JAVA_UTILS_EXEC_RESULT:"  # Flink's bash-java-utils.sh
JVM_MEM_OPTS_ENV = "FLINK_TM_JVM_MEM_OPTS"  # Flink's Constants.ENV_TM_JVM_MEM_OPTS
KUBERNETES_TASKMANAGER_SCRIPT = "kubernetes-taskmanager.sh"  # on the image's PATH
JAVA_HOME_KEY = "env.java.home"
DEFAULT_TIMEOUT = 120.0  # one JVM on a busy machine


class TaskManagerMemoryError(ValueError):
    """Flink's code refused the memory configuration, or its answer could not be read."""


@dataclass(frozen=True, slots=True)
class TaskManagerMemory:
    """What ``taskmanager.sh`` would compute for one TaskManager configuration."""

    jvm_options: tuple[str, ...]  # -Xmx... -Xms... -XX:MaxDirectMemorySize=... ...
    dynamic_properties: tuple[str, ...]  # as words: "-D", "key=value", "-D", ...

    @property
    def jvm_options_env(self) -> str:
        """The value of ``FLINK_TM_JVM_MEM_OPTS``."""
        return " ".join(self.jvm_options)


def parse_resource_params(output: str) -> TaskManagerMemory:
    """The helper's output → its two result lines, read as ``bash-java-utils.sh`` reads
    them (exactly two lines with the prefix: JVM options, then dynamic properties, split on
    whitespace); anything else is a :class:`TaskManagerMemoryError` quoting it."""
    results = [
        line.split(RESULT_PREFIX, 1)[1].strip()
        for line in output.splitlines()
        if RESULT_PREFIX in line
    ]
    if len(results) != 2:
        raise TaskManagerMemoryError(
            f"Flink's {BASH_JAVA_UTILS_CLASS} {GET_TM_RESOURCE_PARAMS} printed "
            f"{len(results)} result line(s), expected 2: {output_tail(output)}"
        )
    jvm_options = tuple(results[0].split())
    bad = [word for word in jvm_options if not word.startswith("-X")]
    if not jvm_options or bad:
        raise TaskManagerMemoryError(
            f"Flink's JVM memory options {results[0]!r} are not -X options: {bad or 'none'}"
        )
    words = tuple(results[1].split())
    pairs = list(zip(words[::2], words[1::2], strict=False))
    if (
        not words
        or len(words) % 2
        or any(flag != "-D" or "=" not in item or item.startswith("=") for flag, item in pairs)
    ):
        raise TaskManagerMemoryError(
            f"Flink's dynamic properties {results[1]!r} are not '-D key=value' pairs"
        )
    return TaskManagerMemory(jvm_options=jvm_options, dynamic_properties=words)


def flink_error(output: str) -> str:
    """The message of the exception the helper died with (its first line), else its tail."""
    for line in output.splitlines():
        if line.startswith("Exception in thread"):
            _, _, rest = line.partition('" ')  # Exception in thread "main" <class>: <message>
            _exception, sep, message = rest.partition(": ")
            return message.strip() if sep and message.strip() else rest.strip() or line
    return output_tail(output)


def java_executable(*, java_home_setting: str | None, environ: Mapping[str, str]) -> str | None:
    """The ``java`` Flink's scripts would run: ``env.java.home``, else ``$JAVA_HOME``, else
    ``java`` on the PATH; None when there is none (config.sh gives up there too)."""
    home = (java_home_setting or "").strip() or environ.get("JAVA_HOME", "").strip()
    if home and Path(home).is_dir():
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if os.access(candidate, os.X_OK) else None
    return shutil.which("java", path=environ.get("PATH"))


def helper_classpath(flink_home: Path) -> str | None:
    """``bin/bash-java-utils.jar:lib/flink-dist*.jar`` (as ``bash-java-utils.sh`` builds it);
    None when this FLINK_HOME lacks either, or holds several flink-dist jars."""
    helper = flink_home / "bin" / "bash-java-utils.jar"
    dist = sorted((flink_home / "lib").glob("flink-dist*.jar"))
    if not helper.is_file() or len(dist) != 1:
        return None
    return f"{helper}:{dist[0]}"


def compute_taskmanager_memory(
    *,
    java: str,
    classpath: str,
    config_yaml: str,
    arguments: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
) -> TaskManagerMemory:
    """Run ``BashJavaUtils GET_TM_RESOURCE_PARAMS`` once against ``config_yaml`` (the
    TaskManagers' ``config.yaml``) with ``arguments`` (the ``-D key=value`` words the pod
    passes to ``taskmanager.sh``). Raises :class:`TaskManagerMemoryError` with Flink's own
    message when it refuses the configuration; OSError / TimeoutExpired when it cannot run."""
    with tempfile.TemporaryDirectory(prefix="rmd-tm-memory-") as conf_dir:
        (Path(conf_dir) / "config.yaml").write_text(config_yaml, encoding="utf-8")
        completed = subprocess.run(
            [
                java,
                "-classpath",
                classpath,
                BASH_JAVA_UTILS_CLASS,
                GET_TM_RESOURCE_PARAMS,
                "--configDir",
                conf_dir,
                *arguments,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    if completed.returncode != 0:
        raise TaskManagerMemoryError(
            f"Flink refuses the TaskManager memory configuration: {flink_error(completed.stdout)}"
        )
    return parse_resource_params(completed.stdout)


@dataclass(frozen=True, slots=True)
class Precomputed:
    """The daemon's one computation: the memory options, or why the pods compute their own."""

    memory: TaskManagerMemory | None
    skipped_because: str | None = None


def precompute_taskmanager_memory(
    *,
    environ: Mapping[str, str],
    java_home_setting: str | None,
    config_yaml: str,
    arguments: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
) -> Precomputed:
    """With Flink beside the daemon (``$FLINK_HOME`` holding Flink's helper, a ``java``):
    :func:`compute_taskmanager_memory`. Without: ``memory`` None and the reason (the pods
    then run ``taskmanager.sh``, which computes the same in each pod). A configuration Flink
    refuses raises :class:`TaskManagerMemoryError`; a helper that cannot run or answers in
    no usable way is a reason to fall back, named."""
    flink_home = environ.get("FLINK_HOME", "").strip()
    if not flink_home:
        return Precomputed(None, "FLINK_HOME is not set (no Flink beside the daemon)")
    classpath = helper_classpath(Path(flink_home))
    if classpath is None:
        return Precomputed(
            None,
            f"FLINK_HOME={flink_home} holds no bin/bash-java-utils.jar and one lib/flink-dist*.jar",
        )
    java = java_executable(java_home_setting=java_home_setting, environ=environ)
    if java is None:
        return Precomputed(None, "no java: set env.java.home or JAVA_HOME, or put java on the PATH")
    try:
        memory = compute_taskmanager_memory(
            java=java,
            classpath=classpath,
            config_yaml=config_yaml,
            arguments=arguments,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Precomputed(None, f"Flink's {BASH_JAVA_UTILS_CLASS} did not run: {error}")
    return Precomputed(memory)


def output_tail(output: str, *, lines: int = 3) -> str:
    """The last ``lines`` lines of a helper's output on one line, for an error message."""
    kept = [line.strip() for line in output.strip().splitlines()[-lines:]]
    return " | ".join(kept) if kept else "(no output)"
