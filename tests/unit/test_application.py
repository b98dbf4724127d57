"""``rmd application start``: the jar checks, the command's bad input (one line, exit 2,
nothing contacted), and when an application counts as ended (pure)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rmd.application_cluster import ApplicationClusterEnd
from rmd.config.settings import RmdSettings
from rmd.flink.answers import ApplicationSummary, JobSummary, parse_applications_overview
from rmd.flink.application import ApplicationEnd, application_end
from rmd.session.application import (
    ApplicationError,
    application_program,
    manifest_main_class,
)
from tests.support.fake_flink import golden

MANIFEST = "Manifest-Version: 1.0\r\nMain-Class: rmd.testjob.RateJob\r\nCreated-By: 17\r\n\r\n"


def _jar(path: Path, *, manifest: str | None = MANIFEST, classes: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        if manifest is not None:
            archive.writestr("META-INF/MANIFEST.MF", manifest)
        for name in ("rmd/testjob/RateJob", *classes):
            archive.writestr(f"{name}.class", b"\xca\xfe\xba\xbe")
    return path


# ---------------------------------------------------------------------------- the jar


def test_a_plain_path_becomes_a_local_uri_of_the_absolute_path(tmp_path: Path) -> None:
    _jar(tmp_path / "job.jar")
    program, note = application_program(
        "job.jar", main_class=None, arguments=["100", "600"], cwd=tmp_path
    )
    assert program.jar_uri == f"local://{tmp_path / 'job.jar'}"
    assert program.main_class is None
    assert program.arguments == ("100", "600")
    assert note is None


def test_a_local_uri_on_this_machine_is_checked_too(tmp_path: Path) -> None:
    jar = _jar(tmp_path / "job.jar", manifest=None)
    with pytest.raises(ApplicationError, match=r"^--jar: .* names no main class .* --class$"):
        application_program(f"local://{jar}", main_class=None, arguments=[])
    program, note = application_program(
        f"local://{jar}", main_class="rmd.testjob.RateJob", arguments=[]
    )
    assert (program.jar_uri, program.main_class, note) == (
        f"local://{jar}",
        "rmd.testjob.RateJob",
        None,
    )


def test_a_local_uri_not_on_this_machine_is_the_images_and_only_noted() -> None:
    program, note = application_program(
        "local:///opt/flink/usrlib/nowhere-here.jar", main_class="a.B", arguments=[]
    )
    assert program.jar_uri == "local:///opt/flink/usrlib/nowhere-here.jar"
    assert note == (
        "local:///opt/flink/usrlib/nowhere-here.jar is not on this machine: not checked; "
        "it must be in the image"
    )


@pytest.mark.parametrize(
    ("jar", "main_class", "message"),
    [
        ("missing.jar", None, r"^--jar: no file missing.jar \(.*missing.jar\); give the path"),
        ("", None, r"^--jar: empty"),
        ("text.jar", None, r"^--jar: text.jar is not a jar file"),
        ("job.jar", "rmd.testjob.Missing", r"^--class: the jar job.jar holds no class "),
        ("job.jar", "not a class", r"^--class: 'not a class' is no Java class name"),
        ("s3://bucket/job.jar", None, r"^--jar: the scheme s3:// is not supported"),
        ("local://job.jar", None, r"^--jar: 'local://job.jar' is no local:// URI of an absolute"),
    ],
)
def test_bad_jars_and_classes_are_one_line_naming_the_option(
    tmp_path: Path, jar: str, main_class: str | None, message: str
) -> None:
    _jar(tmp_path / "job.jar")
    (tmp_path / "text.jar").write_text("not a zip\n")
    with pytest.raises(ApplicationError, match=message) as raised:
        application_program(jar, main_class=main_class, arguments=[], cwd=tmp_path)
    assert "\n" not in str(raised.value)


def test_the_main_class_of_a_manifest_as_flink_reads_it() -> None:
    assert manifest_main_class(MANIFEST) == "rmd.testjob.RateJob"
    assert manifest_main_class("program-class: a.First\nMain-Class: b.Second\n") == "a.First"
    folded = (
        "Main-Class: com.example.a.very.long.package.name.that.java.folds.at.seventy\n two.Job\n"
    )
    assert manifest_main_class(folded) == (
        "com.example.a.very.long.package.name.that.java.folds.at.seventytwo.Job"
    )
    assert manifest_main_class("Manifest-Version: 1.0\n") is None


# ---------------------------------------------------------------------------- the command


def _rmd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rmd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--jar", "missing.jar"], "rmd application start: error: --jar: no file missing.jar"),
        (
            ["--jar", "job.jar", "--class", "rmd.testjob.Nope"],
            "rmd application start: error: --class: the jar job.jar holds no class "
            "rmd.testjob.Nope",
        ),
        (
            ["--jar", "job.jar", "-D", "kubernetes.jobmanager.replicas=zero"],
            "rmd application start: error: kubernetes.jobmanager.replicas",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_before_any_cluster_is_contacted(
    tmp_path: Path, extra: list[str], expected: str
) -> None:
    """The kubeconfig does not even exist: had the command got as far as the cluster, it
    would have said so instead."""
    _jar(tmp_path / "job.jar")
    done = _rmd(
        "application",
        "start",
        "--kubeconfig",
        str(tmp_path / "no-such-kubeconfig"),
        "-D",
        "kubernetes.cluster-id=app",
        *extra,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(expected)
    assert done.stdout == ""


def test_without_a_jar_the_usage_says_it_is_required(tmp_path: Path) -> None:
    done = _rmd("application", "start", cwd=tmp_path)
    assert done.returncode == 2
    assert "the following arguments are required: --jar" in done.stderr


# ---------------------------------------------------------------------------- its end


def _job(job_id: str, state: str) -> JobSummary:
    return JobSummary(job_id=job_id, state=state, scheduler="Default")


def _app(application_id: str, status: str) -> ApplicationSummary:
    return ApplicationSummary(application_id=application_id, name="x", status=status)


def test_flinks_applications_decide_where_flink_lists_them() -> None:
    finished = [_job("j1", "FINISHED")]
    assert application_end(applications=[], jobs=finished) is None  # not submitted yet
    assert application_end(applications=[_app("a", "RUNNING")], jobs=finished) is None
    end = application_end(applications=[_app("a", "FINISHED")], jobs=[])
    assert end is not None
    assert (end.state, end.describe()) == ("FINISHED", "a FINISHED")
    failed = application_end(applications=[_app("a", "FAILED")], jobs=finished)
    assert failed is not None
    assert failed.state == "FAILED"
    assert application_end(applications=[_app("a", "FAILING")], jobs=[]) is None


def test_without_applications_every_job_must_be_globally_terminal() -> None:
    assert application_end(applications=None, jobs=[]) is None
    assert application_end(applications=None, jobs=[_job("j1", "RUNNING")]) is None
    assert application_end(applications=None, jobs=[_job("j1", "SUSPENDED")]) is None
    assert application_end(applications=None, jobs=[_job("j1", "RESTARTING")]) is None
    end = application_end(applications=None, jobs=[_job("j1", "FINISHED"), _job("j2", "CANCELED")])
    assert end is not None
    assert (end.state, end.describe()) == ("CANCELED", "j1 FINISHED, j2 CANCELED")
    worst = application_end(applications=None, jobs=[_job("j1", "FAILED"), _job("j2", "CANCELED")])
    assert worst is not None
    assert worst.state == "FAILED"


def test_the_recorded_applications_overview_parses() -> None:
    [application] = parse_applications_overview(golden("applications-overview-finished"))
    assert application == ApplicationSummary(
        application_id="5dc128eeeceb84b9d9c41e1bfc673d7c",
        name="rmd.testjob.RateJob",
        status="FINISHED",
    )


# ---------------------------------------------------------------------------- what the daemon does


async def test_told_to_stay_the_daemon_only_says_how_to_remove_the_cluster() -> None:
    settings = RmdSettings(cluster_id="app", namespace="ns", shutdown_on_application_finish=False)
    ending = ApplicationClusterEnd(api=None, settings=settings, owner=None)  # type: ignore[arg-type]
    with capture_logs() as logs:
        ending(ApplicationEnd(state="FINISHED", parts=(("a1", "FINISHED"),)))
        await ending.close()
    [line] = logs
    assert line["event"] == "application_finished"
    assert line["cluster"] == "stays (execution.shutdown-on-application-finish: false)"
    assert line["fix"] == (
        "remove it with: rmd session stop -D kubernetes.cluster-id=app -D kubernetes.namespace=ns"
    )


async def test_without_its_deployment_the_daemon_says_there_is_nothing_to_delete() -> None:
    settings = RmdSettings(cluster_id="app", namespace="ns")
    ending = ApplicationClusterEnd(api=None, settings=settings, owner=None)  # type: ignore[arg-type]
    with capture_logs() as logs:
        ending(ApplicationEnd(state="FAILED", parts=(("j1", "FAILED"),)))
        await asyncio.sleep(0)  # the removal runs: no Deployment, so it ends at once
        await ending.close()
    [line] = logs
    assert (line["event"], line["log_level"], line["state"]) == (
        "application_finished",
        "error",
        "FAILED",
    )
    assert line["cluster"] == "not removed: there is no Deployment ns/app to delete"
