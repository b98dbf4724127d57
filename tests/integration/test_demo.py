"""`make demo` and `make demo-sim` keep working: each runs end to end, passes, and leaves
nothing behind; SIGTERM stops the real demo and everything it started (exit 143)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest

from tests.support.waiting import within

pytestmark = pytest.mark.integration

WORK_DIR = re.compile(r"work directory (/\S+)\)")


def _processes_mentioning(path: str) -> str:
    found = subprocess.run(["pgrep", "-a", "-f", path], capture_output=True, text=True, check=False)
    return found.stdout.strip()


@pytest.mark.timeout(480)  # about a minute on an idle 2-core machine; JVMs are slower under load
async def test_the_real_demo_passes_every_step_and_leaves_nothing_behind() -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rmd_dev.demo"],
        capture_output=True,
        text=True,
        timeout=450,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-3000:]
    assert "demo PASSED: 10/10 steps" in out
    for number in range(1, 11):
        assert re.search(rf"PASS step {number}: ", out), f"step {number}:\n{out[-4000:]}"
    assert "FAIL" not in out
    # What the steps saw: Flink's TaskManagers are the pods rmd created, all 8 tasks
    # (2 operators x parallelism 4) ran on them, the deleted pod was replaced and the job
    # restarted, and the idle release came after the 5 s timeout.
    registered = re.search(r"PASS step 4: .* pods: (\S+), (\S+); Flink /taskmanagers: (.*) \(", out)
    assert registered is not None, out
    pods = sorted(registered.groups()[:2])
    assert registered.group(3) == f"{pods[0]}, {pods[1]}"
    assert re.search(r"PASS step 5: .*tasks 8 RUNNING; running on ", out)
    assert f"delete pod {pods[1]} --wait=false" in out
    assert re.search(rf"PASS step 6: .*{pods[1]} gone from Flink; Flink job \w+, restarted;", out)
    replacement = re.search(r"PASS step 7: .*replacement (\S+) registered; .*tasks 8 RUNNING", out)
    assert replacement is not None, out
    assert replacement.group(1) not in pods
    released = re.search(r"PASS step 9: .* deleted (\d+\.\d) s after the cancel", out)
    assert released is not None, out
    assert float(released.group(1)) >= 5.0
    work_dir = WORK_DIR.search(out)
    assert work_dir is not None, out
    assert await asyncio.to_thread(_processes_mentioning, work_dir.group(1)) == ""


@pytest.mark.timeout(480)
async def test_sigterm_stops_the_real_demo_and_everything_it_started() -> None:
    """SIGTERM while real TaskManager JVMs run: exit 143, no JVM and no cluster process left."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rmd_dev.demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    work_dir = None
    seen: list[str] = []
    try:
        async with asyncio.timeout(300):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "the demo ended before its TaskManagers registered:\n" + "".join(seen)
                seen.append(line)
                found = WORK_DIR.search(line)
                work_dir = found.group(1) if found else work_dir
                if line.startswith("[") and "PASS step 4: " in line:
                    break
        assert work_dir is not None
        assert await asyncio.to_thread(_processes_mentioning, work_dir) != ""
        proc.terminate()
        rest = (await within(proc.stdout.read(), seconds=120, what="the demo's output")).decode()
        assert await proc.wait() == 143, rest[-3000:]
        assert "PASS step 10: everything the demo started is stopped" in rest, rest[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert work_dir is not None
    assert await asyncio.to_thread(_processes_mentioning, work_dir) == ""


async def test_the_simulated_demo_plays_every_step_and_cleans_up() -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rmd_dev.demo_sim"],
        capture_output=True,
        text=True,
        timeout=280,
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
    assert await asyncio.to_thread(_processes_mentioning, work_dir.group(1)) == ""
