"""The TaskManager memory the daemon hands to every pod is what Flink's own ``taskmanager.sh``
would have computed in the pod, byte for byte, and a memory configuration Flink refuses stops
the daemon with Flink's message.

Real Flink (the provisioned FLINK_HOME and JDK), no cluster: the daemon's configuration is
loaded as ``rmd daemon`` loads it, with ``FLINK_HOME`` in its environment; Flink's side is
its own shell functions (``config.sh``'s ``parseTmArgsAndExportLogs``, which
``taskmanager.sh`` calls), run against the ``config.yaml`` the daemon publishes for the
TaskManagers and the arguments the pod passes. That a TaskManager started this way registers
and runs a job: ``test_flink_taskmanagers.py``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rmd.config.files import CONFIG_YAML
from rmd.config.flinkconf import ConfigError
from rmd.config.podoptions import taskmanager_arguments
from rmd.daemon import DaemonConfig, load_daemon_config
from rmd.flink.taskmanager_memory import JVM_MEM_OPTS_ENV, KUBERNETES_TASKMANAGER_SCRIPT
from rmd_dev.provision import FlinkInstall

pytestmark = pytest.mark.integration

CASES = {
    "the bench's: 1g, 2 slots": {
        "taskmanager.memory.process.size": "1g",
        "taskmanager.numberOfTaskSlots": "2",
    },
    "fractions and sizes in config.yaml and in the entrypoint args": {
        "taskmanager.memory.process.size": "3g",
        "taskmanager.numberOfTaskSlots": "3",
        "taskmanager.memory.managed.fraction": "0.25",
        "taskmanager.memory.network.fraction": "0.15",
        "taskmanager.memory.jvm-metaspace.size": "200m",
        "kubernetes.taskmanager.entrypoint.args": "-D taskmanager.memory.task.off-heap.size=64m",
    },
    "the defaults (1728m, 1 slot)": {},
}


def _load(tmp_path: Path, flink: FlinkInstall, values: dict[str, str]) -> DaemonConfig:
    conf_dir = tmp_path / "jobmanager-conf"
    conf_dir.mkdir()
    lines = [f"{key}: '{value}'" for key, value in {"kubernetes.cluster-id": "m", **values}.items()]
    (conf_dir / CONFIG_YAML).write_text("\n".join(lines) + "\n")
    environ = {"FLINK_HOME": str(flink.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return load_daemon_config(conf_dir=conf_dir, overrides=[], environ=environ)


def _taskmanager_sh_computes(
    flink: FlinkInstall, *, config_yaml: str, arguments: tuple[str, ...], work: Path
) -> tuple[str, str]:
    """(JVM options, dynamic properties) as taskmanager.sh computes them in the pod."""
    conf_dir = work / "taskmanager-conf"
    conf_dir.mkdir()
    (conf_dir / CONFIG_YAML).write_text(config_yaml)
    script = (
        'source "$FLINK_HOME/bin/config.sh"\n'
        'parseTmArgsAndExportLogs "$@"\n'
        'printf \'jvm:%s\\ndynamic:%s\\n\' "$jvm_params" "$DYNAMIC_PARAMETERS"\n'
    )
    done = subprocess.run(
        # $0: config.sh finds FLINK_HOME from the script's own path
        ["bash", "-c", script, str(flink.home / "bin" / "taskmanager.sh"), *arguments],
        env={
            "FLINK_HOME": str(flink.home),
            "FLINK_CONF_DIR": str(conf_dir),
            "FLINK_LOG_DIR": str(work / "log"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    return lines["jvm"], lines["dynamic"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", list(CASES))
def test_the_daemons_memory_options_are_taskmanager_shs(
    case: str, flink_install: FlinkInstall, tmp_path: Path
) -> None:
    config = _load(tmp_path, flink_install, CASES[case])
    assert config.memory_not_precomputed is None
    assert config.flink_config_map is not None
    arguments = taskmanager_arguments(config.conf, config.settings)
    jvm, dynamic = _taskmanager_sh_computes(
        flink_install,
        config_yaml=config.flink_config_map.data[CONFIG_YAML],
        arguments=arguments,
        work=tmp_path,
    )
    options = config.pods.options
    assert options.jvm_memory_options == " ".join(jvm.split())
    assert "-Xmx" in jvm
    assert "taskmanager.memory.task.heap.size=" in dynamic
    # The pod: <entry> kubernetes-taskmanager.sh <taskmanager.sh's properties> <arguments>,
    # as taskmanager.sh would have ordered them, and the JVM options in Flink's variable.
    command = list(options.command)
    start = command.index(KUBERNETES_TASKMANAGER_SCRIPT) + 1
    assert command[start:] == [*dynamic.split(), *arguments]
    pod = config.pods.build(pod_name="m-taskmanager-1-1", owner=None)
    env = {entry["name"]: entry.get("value") for entry in pod["spec"]["containers"][0]["env"]}
    assert env[JVM_MEM_OPTS_ENV] == options.jvm_memory_options


@pytest.mark.timeout(300)
def test_a_memory_configuration_flink_refuses_stops_the_daemon_with_flinks_words(
    flink_install: FlinkInstall, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, flink_install, {"taskmanager.memory.process.size": "300m"})
    message = str(raised.value)
    assert message.startswith("Flink refuses the TaskManager memory configuration: "), message
    assert "exceed configured Total Process Memory" in message, message
    assert raised.value.key == "taskmanager.memory.process.size"
