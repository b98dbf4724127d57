"""The agent's start costs the TaskManager as little as it can: ``rmd taskmanager`` starts
the command before it loads its HTTP client and logging, and never loads what it does not
use (the Kubernetes client, the metrics library)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rmd.agent import run_agent
from rmd.agent.child import SupervisedProcess
from rmd.agent.cli import LOADING_NICENESS, load_agent_modules
from rmd.agent.exit_codes import EXIT_USAGE
from rmd.config import agent_env
from tests.unit.test_agent_units import GOOD_ENV

HEAVY = ("aiohttp", "structlog", "kubernetes_asyncio", "prometheus_client")


def _loaded_after(code: str, *, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` a fresh interpreter has loaded after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_what_runs_before_the_command_starts_loads_no_http_client_or_logging() -> None:
    # `rmd taskmanager` → rmd.cli → rmd.agent.run_taskmanager → settings, the Flink REST
    # address check, the child process: that much runs before the TaskManager starts.
    before_the_command = (
        "import rmd.cli, rmd.agent, rmd.agent.cli, rmd.agent.child, rmd.agent.flink_conf\n"
        "from rmd.agent import run_taskmanager, settings_from_env"
    )
    assert _loaded_after(before_the_command, watched=(*HEAVY, "rmd.agent.runner")) == []


def test_the_agent_never_loads_the_kubernetes_client_or_metrics() -> None:
    whole_agent = "import rmd.cli, rmd.agent.cli, rmd.agent.runner, rmd.logs"
    assert _loaded_after(whole_agent, watched=("kubernetes_asyncio", "prometheus_client")) == []


async def test_a_command_started_early_is_killed_when_the_environment_is_refused() -> None:
    # The CLI checks the environment before it starts the command; should run_agent still
    # refuse it, the command it was handed must not be left running.
    env = {**GOOD_ENV, agent_env.SUPERVISE_FLINK: "true"}  # but no FLINK_CONF_DIR
    command = ["sleep", "60"]
    started = await SupervisedProcess.start(command, env={"PATH": "/usr/bin:/bin"})
    code = await run_agent(env=env, command=command, started=started)
    assert code == EXIT_USAGE
    assert started.returncode is not None
    assert started.returncode < 0  # killed, not ended by itself


async def test_the_agent_loads_its_modules_on_a_thread_of_lower_priority_only() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)  # Linux: this thread's nice value

    loaded_at = await load_agent_modules(niceness=LOADING_NICENESS)

    assert loaded_at == min(own + LOADING_NICENESS, 19)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own


def test_the_command_keeps_the_agents_priority() -> None:
    # `rmd taskmanager` starts the command, then loads its modules at a lower priority: the
    # command (here: printing its own nice value, field 19 of /proc/self/stat) must not
    # inherit it. No daemon answers; the command's exit ends the agent with its code.
    env = {**os.environ, **GOOD_ENV, agent_env.RESOURCEMANAGER_URL: "http://127.0.0.1:9/"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rmd",
            "taskmanager",
            "--",
            "sh",
            "-c",
            "cut -d' ' -f19 /proc/$$/stat",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[0]) == os.getpriority(os.PRIO_PROCESS, 0)
