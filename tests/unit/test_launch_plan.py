"""The launch plan's pure parts: what it compares, how it is written and read, what the pod
fills in. That a plan starts exactly the JVM Flink's scripts would start:
``tests/integration/test_flink_launch_plan.py``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from rmd.flink.launch_plan import (
    JAVA_MARKER,
    SHELL_VARIABLES,
    LaunchPlan,
    PlanError,
    java_run,
    log_id,
    mismatch,
    referenced_variables,
)

PLAN = LaunchPlan(
    arguments=(JAVA_MARKER, "-Xmx1g", "-Dlog.file=/log/x.log", "Runner", "--configDir", "/c"),
    exported=(("FLINK_BIN_DIR", "/flink/bin"), ("JAVA_RUN", JAVA_MARKER)),
    inputs=(("FLINK_HOME", "/flink"), ("JVM_ARGS", None)),
    flink_home="/flink",
    conf_dir="/c",
    conf_digest="ab",
    flink_digest="cd",
    pid_file="/tmp/flink--kubernetes-taskmanager.pid",
)


def test_the_variables_compared_are_those_the_scripts_mention() -> None:
    names = referenced_variables(
        [
            '# ${IN_A_COMMENT} is not read\nexport JVM_ARGS="$JVM_ARGS ${FLINK_TM_JVM_MEM_OPTS}"\n',
            'FLINK_LOG_PREFIX="${FLINK_LOG_DIR}/flink-${HOSTNAME}"; echo $JAVA_RUN',
        ]
    )
    assert {"JVM_ARGS", "FLINK_TM_JVM_MEM_OPTS", "FLINK_LOG_DIR"} <= names
    assert "IN_A_COMMENT" not in names
    # the pod's own values are filled in, not compared
    assert {"HOSTNAME", "JAVA_RUN"}.isdisjoint(names)
    # what bash and the image's entrypoint read before any script line
    assert set(SHELL_VARIABLES) | {"FLINK_PROPERTIES"} <= names


def test_a_plan_reads_back_as_written() -> None:
    assert LaunchPlan.from_json(PLAN.to_json()) == PLAN


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not a launch plan"),
        ('{"version": 2}', "plan version 2, this agent reads 1"),
        ('{"version": 1}', "is not a launch plan: KeyError('inputs')"),
        (PLAN.to_json().replace(JAVA_MARKER, "/usr/bin/java"), "does not start with java"),
        (PLAN.to_json().replace('"-Xmx1g"', "7"), "arguments must be a list of strings"),
    ],
)
def test_a_plan_that_cannot_be_read_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        LaunchPlan.from_json(text)


def test_java_is_found_as_flinks_set_java_run_finds_it(tmp_path: Path) -> None:
    assert java_run({"JAVA_HOME": str(tmp_path)}) == f"{tmp_path}/bin/java"
    assert java_run({"JAVA_HOME": str(tmp_path / "missing")}) == "java"
    assert java_run({}) == "java"


def test_the_log_number_counts_the_pid_file_while_one_of_its_processes_lives(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "flink--kubernetes-taskmanager.pid"
    assert log_id(pid_file) == 0  # no file
    ended = _ended_pid()
    pid_file.write_text(f"{ended}\n{ended}\n")
    assert log_id(pid_file) == 0
    assert not pid_file.exists()  # removed, as flink-console.sh removes it
    pid_file.write_text(f"{ended}\n{os.getpid()}\n")
    assert log_id(pid_file) == 2


def test_a_command_that_does_not_start_the_script_does_not_fit() -> None:
    reason = mismatch(PLAN, command=("/entry.sh", "taskmanager", "-D", "a=b"), env={})
    assert reason == "the command does not start kubernetes-taskmanager.sh through the entrypoint"
    unset = mismatch(PLAN, command=("/entry.sh", "kubernetes-taskmanager.sh"), env={})
    assert unset == "$FLINK_HOME is unset here, the plan was made for '/flink'"


def _ended_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
