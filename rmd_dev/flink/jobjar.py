"""The rate-limited streaming job of the demo and the tests, compiled once.

``rmd_dev/flink/job/`` holds its source (a rate-limited DataGeneratorSource, endless unless
its second argument bounds it → keyBy → DiscardingSink; every operator runs at the
submitter's parallelism, so a job with parallelism N needs N slots). :func:`compile_rate_job`
compiles it with ``javac`` against ``$FLINK_HOME/lib/*`` into
``~/.cache/rmd/flink-<version>/test-jobs/``, keyed by the hash of the sources and the Flink
version, so only the first call pays (a few seconds).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from rmd_dev.provision import FlinkInstall, flink_dir

JOB_SOURCE_DIR = Path(__file__).resolve().parent / "job"
JOB_MAIN_CLASS = "rmd.testjob.RateJob"


def compile_rate_job(flink: FlinkInstall) -> Path:
    """The job's jar, compiled with javac against ``$FLINK_HOME/lib/*``; cached by the hash
    of its sources and the Flink version."""
    sources = sorted(JOB_SOURCE_DIR.rglob("*.java"))
    if not sources:
        raise FileNotFoundError(f"no Java sources under {JOB_SOURCE_DIR}")
    digest = hashlib.sha256(flink.version.encode())
    for source in sources:
        digest.update(source.read_bytes())
    jar = flink_dir(flink.version) / "test-jobs" / f"rate-job-{digest.hexdigest()[:16]}.jar"
    if jar.is_file():
        return jar
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rate-job-", dir=jar.parent) as work:
        classes = Path(work) / "classes"
        subprocess.run(
            [
                "javac",
                "-nowarn",
                "-cp",
                f"{flink.home}/lib/*",
                "-d",
                str(classes),
                *map(str, sources),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        partial = Path(work) / "job.jar"
        subprocess.run(
            [
                "jar",
                "--create",
                "--file",
                str(partial),
                "--main-class",
                JOB_MAIN_CLASS,
                "-C",
                str(classes),
                ".",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        partial.replace(jar)
    return jar
