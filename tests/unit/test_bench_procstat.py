"""bench.procstat.TreeCpu: CPU by kind of process, the bench's descendants apart from the rest."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.procstat import TreeCpu, _kind


@pytest.mark.parametrize(
    ("cmdline", "kind"),
    [
        (
            "java -Xmx1g org.apache.flink.kubernetes.taskmanager.KubernetesTaskExecutorRunner",
            "taskmanager JVMs",
        ),
        ("java -cp x org.apache.flink.runtime.taskexecutor.TaskManagerRunner", "taskmanager JVMs"),
        ("java -cp x org.apache.flink.runtime.util.bash.BashJavaUtils GET_TM", "helper JVMs"),
        (
            "java -cp x org.apache.flink.kubernetes.entrypoint.KubernetesSessionClusterEntrypoint",
            "jobmanager JVM",
        ),
        (
            "/venv/bin/python -m rmd taskmanager -- /opt/flink/bin/kubernetes-taskmanager.sh",
            "agents",
        ),
        ("/venv/bin/python -m rmd daemon --conf-dir /c --kubeconfig /k", "daemon"),
        ("/cache/kubernetes-v1.20.2/bin/kube-apiserver --etcd-servers=x", "control plane"),
        ("/usr/bin/etcd --name rmd", "control plane"),
        ("/venv/bin/python -m rmd_dev.emulator --kubeconfig /k", "node emulator"),
        ("sleep 1", "bench and other own"),
    ],
)
def test_processes_are_told_apart_by_their_command_line(cmdline: str, kind: str) -> None:
    assert _kind(cmdline) == kind


def test_a_busy_child_counts_as_ours_and_other_processes_as_the_machine() -> None:
    meter = TreeCpu(root=os.getpid())
    meter.start()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass",
        ]
    )
    while child.poll() is None:
        meter.sample()
        time.sleep(0.02)
    totals = meter.stop()

    assert totals["bench and other own"] >= 0.25  # the child's 0.3 s (and this test's own)
    assert "machine" in totals  # every other process on the machine, apart
