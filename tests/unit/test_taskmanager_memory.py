"""Reading Flink's BashJavaUtils answer, and when the daemon computes it at all
(:mod:`rmd.flink.taskmanager_memory`); that the values equal taskmanager.sh's own is proved
against real Flink in ``tests/integration/test_flink_taskmanager_memory.py``."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rmd.flink.taskmanager_memory import (
    RESULT_PREFIX,
    TaskManagerMemoryError,
    flink_error,
    helper_classpath,
    java_executable,
    parse_resource_params,
    precompute_taskmanager_memory,
)

JVM_LINE = "-Xmx161061270 -Xms161061270 -XX:MaxDirectMemorySize=201326592"
DYNAMIC_LINE = "-D taskmanager.memory.network.min=67108864b -D taskmanager.cpu.cores=2.0"
# What the helper prints: its configuration log lines, then the two results.
OUTPUT = (
    "INFO  [] - Loading configuration property: taskmanager.memory.process.size, 1g\n"
    f"{RESULT_PREFIX}{JVM_LINE}\n"
    f"{RESULT_PREFIX}{DYNAMIC_LINE}\n"
)


def test_the_two_result_lines_are_read_as_taskmanager_sh_reads_them() -> None:
    memory = parse_resource_params(OUTPUT)
    assert memory.jvm_options == tuple(JVM_LINE.split())
    assert memory.jvm_options_env == JVM_LINE
    assert memory.dynamic_properties == (
        "-D",
        "taskmanager.memory.network.min=67108864b",
        "-D",
        "taskmanager.cpu.cores=2.0",
    )


@pytest.mark.parametrize(
    ("output", "complaint"),
    [
        ("INFO  [] - nothing else\n", "printed 0 result line(s), expected 2"),
        (f"{RESULT_PREFIX}{JVM_LINE}\n", "printed 1 result line(s), expected 2"),
        (OUTPUT + f"{RESULT_PREFIX}-Xmx1\n", "printed 3 result line(s)"),
        (f"{RESULT_PREFIX}Xmx1 -Xms1\n{RESULT_PREFIX}{DYNAMIC_LINE}\n", "are not -X options"),
        (f"{RESULT_PREFIX}\n{RESULT_PREFIX}{DYNAMIC_LINE}\n", "are not -X options"),
        (f"{RESULT_PREFIX}{JVM_LINE}\n{RESULT_PREFIX}-D a=b -D\n", "not '-D key=value' pairs"),
        (f"{RESULT_PREFIX}{JVM_LINE}\n{RESULT_PREFIX}-D a=b c=d -D\n", "not '-D key=value'"),
        (f"{RESULT_PREFIX}{JVM_LINE}\n{RESULT_PREFIX}-D a -D b=c\n", "not '-D key=value'"),
        (f"{RESULT_PREFIX}{JVM_LINE}\n{RESULT_PREFIX}-D =a\n", "not '-D key=value'"),
        (f"{RESULT_PREFIX}{JVM_LINE}\n{RESULT_PREFIX}\n", "not '-D key=value'"),
    ],
)
def test_any_other_answer_is_refused_naming_it(output: str, complaint: str) -> None:
    with pytest.raises(TaskManagerMemoryError) as raised:
        parse_resource_params(output)
    assert complaint in str(raised.value)


def test_flinks_own_message_is_what_a_refusal_says() -> None:
    output = (
        "INFO  [] - Loading dynamic configuration property: taskmanager.memory.process.size, 100m\n"
        'Exception in thread "main" org.apache.flink.configuration.IllegalConfigurationException:'
        " TaskManager memory configuration failed: Sum of configured JVM Metaspace exceeds"
        " configured Total Process Memory.\n"
        "\tat org.apache.flink.runtime.clusterframework.TaskExecutorProcessUtils.x(T.java:1)\n"
    )
    assert flink_error(output) == (
        "TaskManager memory configuration failed: Sum of configured JVM Metaspace exceeds"
        " configured Total Process Memory."
    )
    assert flink_error("Error: could not find or load main class X\n") == (
        "Error: could not find or load main class X"
    )


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_java_is_chosen_as_flinks_config_sh_chooses_it(tmp_path: Path) -> None:
    configured = _executable(tmp_path / "configured" / "bin" / "java")
    from_env = _executable(tmp_path / "env" / "bin" / "java")
    on_path = _executable(tmp_path / "path" / "java")
    environ = {"JAVA_HOME": str(tmp_path / "env"), "PATH": str(tmp_path / "path")}
    assert java_executable(java_home_setting=str(tmp_path / "configured"), environ=environ) == str(
        configured
    )
    assert java_executable(java_home_setting=None, environ=environ) == str(from_env)
    assert java_executable(java_home_setting=" ", environ={"PATH": environ["PATH"]}) == str(on_path)
    assert java_executable(java_home_setting=None, environ={"PATH": str(tmp_path)}) is None


def test_the_helper_needs_its_jar_and_exactly_one_flink_dist(tmp_path: Path) -> None:
    assert helper_classpath(tmp_path) is None
    (tmp_path / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "bin" / "bash-java-utils.jar").write_bytes(b"")
    assert helper_classpath(tmp_path) is None
    (tmp_path / "lib" / "flink-dist-2.3.0.jar").write_bytes(b"")
    assert helper_classpath(tmp_path) == (
        f"{tmp_path}/bin/bash-java-utils.jar:{tmp_path}/lib/flink-dist-2.3.0.jar"
    )
    (tmp_path / "lib" / "flink-dist-2.2.0.jar").write_bytes(b"")
    assert helper_classpath(tmp_path) is None


def test_without_flink_beside_the_daemon_the_pods_compute_it_and_the_reason_is_named(
    tmp_path: Path,
) -> None:
    def reason(environ: dict[str, str]) -> str | None:
        result = precompute_taskmanager_memory(
            environ=environ, java_home_setting=None, config_yaml="", arguments=()
        )
        assert result.memory is None
        return result.skipped_because

    assert reason({}) == "FLINK_HOME is not set (no Flink beside the daemon)"
    assert "holds no bin/bash-java-utils.jar" in (reason({"FLINK_HOME": str(tmp_path)}) or "")
    (tmp_path / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "bin" / "bash-java-utils.jar").write_bytes(b"")
    (tmp_path / "lib" / "flink-dist-2.3.0.jar").write_bytes(b"")
    no_java = {"FLINK_HOME": str(tmp_path), "PATH": str(tmp_path / "bin")}
    assert reason(no_java) == "no java: set env.java.home or JAVA_HOME, or put java on the PATH"
    # A java that cannot run (here: not an executable format) is a reason too, not a crash.
    broken = tmp_path / "jdk" / "bin" / "java"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x00\x01")
    broken.chmod(0o755)
    assert "did not run" in (
        reason({"FLINK_HOME": str(tmp_path), "JAVA_HOME": str(tmp_path / "jdk")}) or ""
    )
