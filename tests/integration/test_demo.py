"""`make demo` keeps working: the demo runs end to end, passes, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest

from tests.support.waiting import within

pytestmark = pytest.mark.integration


async def test_the_demo_plays_every_step_and_cleans_up() -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rmd_dev.demo"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "demo PASSED: 4/4 steps" in out
    for step in (
        "job A declares 8 slots (4 per TaskManager)",
        "job B declares 4 slots",
        "a TaskManager pod of job B is deleted with kubectl",
        "job A finishes",
    ):
        assert re.search(rf"✔ {re.escape(step)} — ", out), step
    assert "rmd_num_registered_taskmanagers 1.0" in out
    assert 'rmd_pods_deleted_total{reason="idle"} 2.0' in out
    work_dir = re.search(r"log: (/\S+)/daemon\.log", out)
    assert work_dir is not None
    # The demo's own cluster is gone: no process still runs from its directory.
    leftovers = await asyncio.to_thread(
        subprocess.run,
        ["pgrep", "-f", work_dir.group(1)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert leftovers.stdout.strip() == "", leftovers.stdout


async def test_sigterm_stops_the_demo_and_everything_it_started() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rmd_dev.demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    work_dir = None
    try:
        async with asyncio.timeout(120):
            while work_dir is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "the demo ended before its daemon started"
                found = re.search(r"log: (/\S+)/daemon\.log", line)
                work_dir = found.group(1) if found else None
        proc.terminate()
        rest = (await within(proc.stdout.read(), seconds=60, what="the demo's output")).decode()
        assert await proc.wait() == 143, rest[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    leftovers = await asyncio.to_thread(
        subprocess.run, ["pgrep", "-f", work_dir], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout.strip() == "", leftovers.stdout
