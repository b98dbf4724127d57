"""``rmd dev-cluster up --flink``: argument checks, the export lines, unpacking wheels."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from rmd_dev.cli import main as dev_cluster_main
from rmd_dev.cluster import ClusterState, export_line
from rmd_dev.provision import (
    flink_entrypoint,
    unpack_libraries_sdist,
    unpack_wheel,
    valid_flink_version,
)


def _state(*, flink_home: str = "", flink_entrypoint: str = "") -> ClusterState:
    return ClusterState(
        dir="/d",
        server="https://x",
        etcd_url="http://e",
        kubeconfig="/d/kubeconfig",
        node_names=[],
        flink_home=flink_home,
        flink_entrypoint=flink_entrypoint,
    )


def test_export_lines_name_flink_home_and_entrypoint_and_end_with_kubeconfig() -> None:
    assert export_line(_state()) == "export KUBECONFIG=/d/kubeconfig"
    lines = export_line(_state(flink_home="/c/pyflink", flink_entrypoint="/e.sh")).splitlines()
    assert lines == [
        "export FLINK_HOME=/c/pyflink",
        "export FLINK_ENTRYPOINT=/e.sh",
        "export KUBECONFIG=/d/kubeconfig",
    ]


def test_a_state_file_written_before_flink_support_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(
        json.dumps(
            {"dir": "/d", "server": "s", "etcd_url": "e", "kubeconfig": "k", "node_names": []}
        )
    )
    assert ClusterState.load(path).flink_home == ""


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["up", "--flink-version", "2.3.0"], "--flink-version needs --flink"),
        (["up", "--flink", "--flink-version", "2.3;rm"], "is not a release number"),
    ],
)
def test_bad_flink_arguments_stop_before_anything_starts(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert dev_cluster_main([*argv, "--dir", str(tmp_path / "c")]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_versions() -> None:
    assert valid_flink_version("2.3.0")
    assert valid_flink_version("1.20.3")
    assert not valid_flink_version("latest")


def test_unpacking_keeps_recorded_modes_and_makes_bin_scripts_executable(tmp_path: Path) -> None:
    wheel = tmp_path / "x.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        recorded = zipfile.ZipInfo("pyflink/bin/jobmanager.sh")
        recorded.external_attr = (stat.S_IFREG | 0o755) << 16
        archive.writestr(recorded, "#!/bin/sh\n")
        archive.writestr("pyflink/bin/config.sh", "# sourced\n")  # no mode recorded
        archive.writestr("pyflink/lib/flink-dist.jar", "jar")
    unpack_wheel(wheel, tmp_path / "out")
    bin_dir = tmp_path / "out" / "pyflink" / "bin"
    assert os.access(bin_dir / "jobmanager.sh", os.X_OK)
    assert os.access(bin_dir / "config.sh", os.X_OK)
    assert not os.access(tmp_path / "out" / "pyflink" / "lib" / "flink-dist.jar", os.X_OK)


def test_the_entrypoint_refuses_to_run_without_a_flink_home() -> None:
    done = subprocess.run(
        [str(flink_entrypoint()), "taskmanager"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "FLINK_HOME" in done.stderr
    assert "rmd dev-cluster up --flink" in done.stderr


def test_a_libraries_sdist_unpacks_its_deps_into_pyflink(tmp_path: Path) -> None:
    top = tmp_path / "apache-flink-libraries-1.20.3"
    for relative in ("deps/lib/flink-dist-1.20.3.jar", "deps/bin/bash-java-utils.jar", "setup.py"):
        (top / relative).parent.mkdir(parents=True, exist_ok=True)
        (top / relative).write_text(relative)
    sdist = tmp_path / "libs.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(top, arcname=top.name)
    unpack_libraries_sdist(sdist, tmp_path / "out")
    home = tmp_path / "out" / "pyflink"
    assert (home / "lib" / "flink-dist-1.20.3.jar").read_text() == "deps/lib/flink-dist-1.20.3.jar"
    assert (home / "bin" / "bash-java-utils.jar").is_file()
    assert not (tmp_path / "out" / "setup.py").exists()
