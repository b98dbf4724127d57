"""The configuration directory for ``rmd session start`` on the local cluster.

On a real cluster the JobManager pod runs the rmd image; on the local control plane the node
emulator runs it as local processes. Everything that differs is configuration, written here:
the emulator's run annotation on both pods, FLINK_HOME and the stand-in of Flink's image
entrypoint (``rmd_dev/flink/docker-entrypoint.sh``) from the cached Flink, the repository's
``entrypoint/rmd-entrypoint.sh`` as the JobManager's entrypoint, small memory, and the pod
IP binding: pods share the host's network here, so the JobManager, its REST API and the
daemon bind their own pod IP (``$(_POD_IP_ADDRESS)``, expanded by the kubelet — here the
emulator — in the entrypoint's ``-D`` arguments, which reach the daemon too) and the
TaskManagers and the daemon reach them there rather than through Services (no kube-proxy).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from rmd.config.files import parse_config_yaml
from rmd.kube.flinkconfigmap import render_config_yaml
from rmd_dev.provision import FlinkInstall

REPOSITORY = Path(__file__).resolve().parents[2]
RMD_ENTRYPOINT = REPOSITORY / "entrypoint" / "rmd-entrypoint.sh"
EMULATOR_RUNS_PROCESSES = "emulator.rmd.dev/run:process"
POD_IP = "$(_POD_IP_ADDRESS)"
REST_PORT = 8081
DAEMON_PORT = 8090


def session_configuration(
    *, flink: FlinkInstall, namespace: str, work_dir: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    """config.yaml of a session cluster on the local cluster; ``extra`` wins."""
    stock = parse_config_yaml((flink.home / "conf" / "config.yaml").read_text())
    binding = {
        "jobmanager.rpc.address": POD_IP,
        "jobmanager.bind-host": POD_IP,
        "rest.address": POD_IP,
        "rest.bind-address": POD_IP,
        "rmd.rest.address": POD_IP,
        "rmd.taskmanager.resourcemanager-url": f"http://{POD_IP}:{DAEMON_PORT}",
        "rmd.flink.rest-url": f"http://{POD_IP}:{REST_PORT}",
    }
    values = {
        "env.java.opts.all": stock.get("env.java.opts.all", ""),
        "kubernetes.namespace": namespace,
        "kubernetes.container.image.ref": f"flink:{flink.version}",
        "kubernetes.service-account": "rmd",
        "jobmanager.memory.process.size": "1g",
        "kubernetes.jobmanager.cpu.amount": "0.5",
        "kubernetes.jobmanager.annotations": EMULATOR_RUNS_PROCESSES,
        "rmd.jobmanager.entry-path": str(RMD_ENTRYPOINT),
        "kubernetes.jobmanager.entrypoint.args": " ".join(
            f"-D {key}={value}" for key, value in binding.items()
        ),
        "containerized.master.env.FLINK_HOME": str(flink.home),
        "containerized.master.env.FLINK_ENTRYPOINT": str(flink.entrypoint),
        "containerized.master.env.FLINK_LOG_DIR": str(work_dir / "jobmanager-logs"),
        "containerized.master.env.FLINK_PID_DIR": str(work_dir / "jobmanager-pids"),
        "rest.port": str(REST_PORT),
        "rmd.rest.port": str(DAEMON_PORT),
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "1000",
        "restart-strategy.fixed-delay.delay": "1 s",
        "taskmanager.numberOfTaskSlots": "2",
        "taskmanager.memory.process.size": "1g",
        "kubernetes.taskmanager.cpu.amount": "0.5",
        "kubernetes.entry.path": str(flink.entrypoint),
        "kubernetes.flink.log.dir": str(work_dir / "taskmanager-logs"),
        "kubernetes.taskmanager.annotations": EMULATOR_RUNS_PROCESSES,
        "containerized.taskmanager.env.FLINK_HOME": str(flink.home),
        "containerized.taskmanager.env.FLINK_PID_DIR": str(work_dir / "taskmanager-pids"),
        "rmd.taskmanager.agent-command": f"{sys.executable};-m;rmd;taskmanager",
        "rmd.taskmanager.supervise-flink": "true",
    }
    values.update(extra)
    return values


def write_session_conf_dir(
    conf_dir: Path, *, flink: FlinkInstall, values: Mapping[str, str]
) -> Path:
    """config.yaml and Flink's console logging files (they go into the ConfigMap)."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in ("log4j-console.properties", "logback-console.xml"):
        shutil.copy(flink.home / "conf" / name, conf_dir / name)
    (conf_dir / "config.yaml").write_text(render_config_yaml(values))
    return conf_dir
