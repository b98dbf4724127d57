"""The launch plan starts exactly the JVM Flink's own ``kubernetes-taskmanager.sh`` would have
started in the pod, and is not used where the pod differs from what it was made for.

Real Flink (the provisioned FLINK_HOME and JDK), no cluster. The daemon's side is
:func:`rmd.daemon.load_daemon_config` as ``rmd daemon`` runs it; the pod's side is the real
script in a pod-like environment (its own configuration directory, host name, pid directory
and arguments), run with this test's own recording ``java`` on ``$JAVA_HOME`` so that what
the script would exec can be compared word for word and variable for variable with what the
agent runs from the plan. That such a JVM registers and runs a job:
``test_flink_taskmanagers.py``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rmd.agent.cli import planned_launch
from rmd.config.files import CONFIG_YAML
from rmd.daemon import DaemonConfig, load_daemon_config
from rmd.flink.launch_plan import PLAN_FILE, RUNNER_CLASS, Launch, LaunchPlan, apply_plan
from rmd.flink.launch_recording import RecordingRefused, record_launch_plan
from rmd.flink.taskmanager_memory import JVM_MEM_OPTS_ENV, KUBERNETES_TASKMANAGER_SCRIPT
from rmd_dev.provision import FlinkInstall

pytestmark = pytest.mark.integration

# This test's stand-in for the pod's java: writes down its arguments and environment.
RECORDING_JAVA = """#!/bin/sh
for word in "$@"; do
  if [ "$word" = "org.apache.flink.kubernetes.taskmanager.KubernetesTaskExecutorRunner" ]; then
    printf '%s\\0' "$0" "$@" > "$POD_RECORD.args"
    env -0 > "$POD_RECORD.env"
    exit 0
  fi
done
exec java "$@"  # the real one, on the PATH
"""
POD_ARGUMENTS = ("-D", "taskmanager.resource-id=tm-1", "-D", "taskmanager.host=10.0.0.7")
SHELL_OWN = {"_", "SHLVL", "PWD", "OLDPWD", "POD_RECORD"}


def _jdk(tmp_path: Path) -> Path:
    """A JAVA_HOME whose bin/java is the recording stand-in."""
    home = tmp_path / "pod-jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(RECORDING_JAVA)
    java.chmod(0o755)
    return home


def _daemon(
    tmp_path: Path, flink: FlinkInstall, *, java_home: Path, values: dict[str, str]
) -> DaemonConfig:
    conf_dir = tmp_path / "jobmanager-conf"
    conf_dir.mkdir()
    values = {
        "kubernetes.cluster-id": "p",
        # where the pod mounts its configuration: here, a directory of this test
        "kubernetes.flink.conf.dir": str(tmp_path / "pod-conf"),
        "containerized.taskmanager.env.FLINK_HOME": str(flink.home),
        **values,
    }
    lines = [f"{key}: '{value}'" for key, value in values.items()]
    (conf_dir / CONFIG_YAML).write_text("\n".join(lines) + "\n")
    environ = {
        "FLINK_HOME": str(flink.home),
        "JAVA_HOME": str(java_home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
    }
    return load_daemon_config(conf_dir=conf_dir, overrides=[], environ=environ)


def _pod(tmp_path: Path, config: DaemonConfig, *, java_home: Path) -> tuple[dict[str, str], Path]:
    """The pod's environment (the image's variables, the pod spec's literal ones, what the
    kubelet adds) and its mounted configuration directory."""
    assert config.flink_config_map is not None
    pod_conf = Path(config.pods.options.flink_conf_dir or "")
    pod_conf.mkdir(parents=True)
    for name, text in config.flink_config_map.data.items():
        (pod_conf / name).write_text(text)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "JAVA_HOME": str(java_home),
        "HOSTNAME": "tm-1",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "RMD_POD_NAME": "tm-1",
    }
    env.update(
        {name: value for name, value in config.pods.container_env().items() if value is not None}
    )
    return env, pod_conf


def _plan(config: DaemonConfig) -> LaunchPlan:
    """The plan the daemon publishes."""
    assert config.flink_config_map is not None
    return LaunchPlan.from_json(config.flink_config_map.data[PLAN_FILE])


def _script_execs(
    flink: FlinkInstall, *, env: dict[str, str], arguments: tuple[str, ...], work: Path
) -> tuple[list[str], dict[str, str]]:
    """What the real kubernetes-taskmanager.sh execs in this pod: (argv, environment)."""
    record = work / "pod-record"
    done = subprocess.run(
        ["bash", str(flink.home / "bin" / KUBERNETES_TASKMANAGER_SCRIPT), *arguments],
        env={**env, "POD_RECORD": str(record)},
        cwd=work,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert (work / "pod-record.args").exists(), done.stdout + done.stderr
    argv = (work / "pod-record.args").read_bytes().decode().split("\0")[:-1]
    pairs = (work / "pod-record.env").read_bytes().decode().split("\0")[:-1]
    environ = dict(pair.partition("=")[::2] for pair in pairs)
    return argv, {k: v for k, v in environ.items() if k not in SHELL_OWN}


def test_the_plan_starts_the_jvm_the_script_would_start(
    flink_install: FlinkInstall, tmp_path: Path
) -> None:
    java_home = _jdk(tmp_path)
    pid_dir = tmp_path / "pids"
    config = _daemon(
        tmp_path,
        flink_install,
        java_home=java_home,
        values={
            "taskmanager.memory.process.size": "1g",
            "taskmanager.numberOfTaskSlots": "2",
            "containerized.taskmanager.env.FLINK_ENV_JAVA_OPTS_TM": "-Dfrom.env=1",
            "containerized.taskmanager.env.FLINK_PID_DIR": str(pid_dir),
            "env.java.opts.taskmanager": "-Dfrom.config=1",
            "env.log.dir": str(tmp_path / "logs"),
        },
    )
    assert config.launch_not_planned is None, config.launch_not_planned
    env, _ = _pod(tmp_path, config, java_home=java_home)
    # Another TaskManager of this pid directory still runs: the log file gets number 1.
    pid_dir.mkdir()
    (pid_dir / "flink--kubernetes-taskmanager.pid").write_text(f"{os.getpid()}\n")
    command = ("/docker-entrypoint.sh", KUBERNETES_TASKMANAGER_SCRIPT, *POD_ARGUMENTS)
    launch = apply_plan(_plan(config), command=command, env=env, hostname="ignored")
    assert isinstance(launch, Launch), launch
    assert launch.log_id == 1

    argv, script_env = _script_execs(flink_install, env=env, arguments=POD_ARGUMENTS, work=tmp_path)
    assert list(launch.command) == ["/docker-entrypoint.sh", *argv]
    assert RUNNER_CLASS in argv
    assert "-Dfrom.env=1" in argv
    assert env[JVM_MEM_OPTS_ENV].split()[0] in argv
    assert any(word.endswith("-kubernetes-taskmanager-1-tm-1.log") for word in argv), argv
    assert {k: v for k, v in launch.env.items() if k not in SHELL_OWN} == script_env


def test_a_pod_that_differs_runs_the_scripts_and_says_why(
    flink_install: FlinkInstall, tmp_path: Path
) -> None:
    java_home = _jdk(tmp_path)
    config = _daemon(tmp_path, flink_install, java_home=java_home, values={})
    env, pod_conf = _pod(tmp_path, config, java_home=java_home)
    plan = _plan(config)
    command = ("/docker-entrypoint.sh", KUBERNETES_TASKMANAGER_SCRIPT, *POD_ARGUMENTS)
    assert isinstance(apply_plan(plan, command=command, env=env, hostname="h"), Launch)

    changed = apply_plan(plan, command=command, env={**env, "JVM_ARGS": "-Dx=1"}, hostname="h")
    assert changed == "$JVM_ARGS is '-Dx=1' here, the plan was made for unset"
    other_image = apply_plan(plan, command=command, env={**env, "JAVA_HOME": "/j"}, hostname="h")
    assert isinstance(other_image, str)
    assert other_image.startswith("$JAVA_HOME is '/j' here")
    taskmanager_sh = ("/docker-entrypoint.sh", "taskmanager", *POD_ARGUMENTS)
    assert "does not start kubernetes-taskmanager.sh" in str(
        apply_plan(plan, command=taskmanager_sh, env=env, hostname="h")
    )
    (pod_conf / CONFIG_YAML).write_text((pod_conf / CONFIG_YAML).read_text() + "a.b: c\n")
    edited = apply_plan(plan, command=command, env=env, hostname="h")
    assert edited == f"{pod_conf}/config.yaml differs from the one the plan was made with"


def test_the_agent_reads_the_plan_next_to_config_yaml(
    flink_install: FlinkInstall, tmp_path: Path
) -> None:
    java_home = _jdk(tmp_path)
    config = _daemon(tmp_path, flink_install, java_home=java_home, values={})
    env, pod_conf = _pod(tmp_path, config, java_home=java_home)
    command = ("/docker-entrypoint.sh", KUBERNETES_TASKMANAGER_SCRIPT, *POD_ARGUMENTS)
    plan_path = pod_conf / PLAN_FILE
    assert plan_path.read_text() == _plan(config).to_json()  # as the ConfigMap mounts it
    used = planned_launch(command, env=env)
    assert used.launch is not None
    assert used.unused_because is None
    assert used.launch.command[0] == "/docker-entrypoint.sh"
    assert used.launch.command[1] == f"{java_home}/bin/java"
    assert used.launch.command[-len(POD_ARGUMENTS) :] == POD_ARGUMENTS

    plan_path.write_text('{"version": 99}')
    unread = planned_launch(command, env=env)
    assert unread.launch is None
    assert unread.unused_because == f"{PLAN_FILE}: plan version 99, this agent reads 1"
    plan_path.unlink()
    assert planned_launch(command, env=env).unused_because is None  # no plan: nothing to say


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"env.java.home": "/opt/java"}, "env.java.home is set"),
        ({"env.java.opts.all": "-Dhost=$(hostname)"}, "shell syntax"),
        ({"env.stdout-err.redirect-to-file": "true"}, "redirected to files"),
        ({"rmd.taskmanager.launch-plan": "false"}, "rmd.taskmanager.launch-plan is off"),
    ],
)
def test_configurations_a_plan_cannot_cover_get_none(
    flink_install: FlinkInstall, tmp_path: Path, values: dict[str, str], reason: str
) -> None:
    config = _daemon(tmp_path, flink_install, java_home=_jdk(tmp_path), values=values)
    assert config.launch_not_planned is not None
    assert reason in config.launch_not_planned
    assert config.flink_config_map is not None
    assert PLAN_FILE not in config.flink_config_map.data


def test_a_variable_only_the_pod_knows_gets_no_plan(
    flink_install: FlinkInstall, tmp_path: Path
) -> None:
    with pytest.raises(RecordingRefused, match=r"\$JVM_ARGS is read by Flink's scripts"):
        record_launch_plan(
            flink_home=flink_install.home,
            conf_files={CONFIG_YAML: "a: b\n"},
            pod_env={"JVM_ARGS": None},  # e.g. from a Secret
            image_env={"PATH": os.environ.get("PATH", "")},
            conf_dir="/opt/flink/conf",
            java_home_setting="",
            pid_dir_setting="",
            java_options=(),
            redirect_to_file=False,
        )
