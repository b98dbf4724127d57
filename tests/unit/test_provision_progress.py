"""Progress of long provisioning: plain phase lines when not on a terminal, a redrawn line
with the elapsed time, the phase and the packages compiled on one."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from rmd_dev.provision import GO_PACKAGES, PhaseLog, ProvisionError, progress_line

PHASE_LINE = re.compile(r"\[ *\d+\.\ds\] .+")
PROGRESS = re.compile(
    r"\[ *\d+\.\ds\] build: kube-apiserver \(minutes\) [|/\\-] \d packages compiled"
)
# A command that prints like `go build -v` does: import paths, one per package, over time.
COMPILES = (
    "echo runtime/internal/sys; sleep 0.4; echo k8s.io/kubernetes/vendor/k8s.io/api/core/v1; "
    "echo 'note: not a package'; sleep 0.4; echo k8s.io/kubernetes/cmd/kube-apiserver; sleep 0.4"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_only_plain_phase_lines_are_printed(tmp_path: Path) -> None:
    out = io.StringIO()
    log = PhaseLog(log_path=tmp_path / "provision.log", out=out)

    log.phase("build: kube-apiserver (minutes)")
    log.run("go build", ["sh", "-c", COMPILES], count=GO_PACKAGES)
    log.phase("build: done")

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(PHASE_LINE.fullmatch(line) for line in lines)
    assert lines[0].endswith("] build: kube-apiserver (minutes)")
    assert lines[1].endswith("] build: done")
    assert "\r" not in out.getvalue()
    logged = (tmp_path / "provision.log").read_text()
    assert "k8s.io/kubernetes/cmd/kube-apiserver" in logged  # the output stays in the log


def test_on_a_terminal_a_line_shows_phase_elapsed_and_packages_compiled(tmp_path: Path) -> None:
    out = Terminal()
    log = PhaseLog(log_path=tmp_path / "provision.log", out=out, refresh=0.1)
    assert log.live

    log.phase("build: kube-apiserver (minutes)")
    log.run("go build", ["sh", "-c", COMPILES], count=GO_PACKAGES)

    text = out.getvalue()
    redraws = [part for part in text.split("\r\x1b[K") if part]
    assert redraws[0].endswith("] build: kube-apiserver (minutes)\n")
    progress = redraws[1:]
    assert len(progress) >= 3
    assert all(
        re.fullmatch(
            r"\[ *\d+\.\ds\] build: kube-apiserver \(minutes\) [|/\\-] \d packages compiled", p
        )
        for p in progress
    ), progress
    counts = [int(p.split()[-3]) for p in progress]
    assert counts == sorted(counts)
    assert counts[0] >= 1
    assert counts[-1] == 3  # the line "note: ..." is no package
    assert text.endswith("\r\x1b[K")  # the progress line is cleared at the end


def test_a_failed_command_names_the_step_and_the_log(tmp_path: Path) -> None:
    log = PhaseLog(log_path=tmp_path / "provision.log", out=Terminal(), refresh=0.05)

    with pytest.raises(ProvisionError) as raised:
        log.run("go build", ["sh", "-c", "sleep 0.2; exit 3"])

    assert str(raised.value) == (
        f"step 'go build' failed (exit 3) running sh; see the log {tmp_path / 'provision.log'}"
    )


def test_progress_line() -> None:
    line = progress_line(phase="build", elapsed=61.25, frame=5, counted="412 packages compiled")
    assert line == "[   61.2s] build / 412 packages compiled"
    assert progress_line(phase="unpacking", elapsed=1, frame=0, counted=None) == (
        "[    1.0s] unpacking |"
    )
