"""The TaskManager agent (``rmd taskmanager``): registers a TaskManager pod with the daemon,
heartbeats, and optionally supervises the real TaskManager process.

``run_taskmanager(argv)`` is the command; ``run_agent(env=..., command=..., stop=...)`` is the
same agent as a coroutine (the node emulator runs many of them in one process).
"""

from rmd.agent.cli import run_taskmanager
from rmd.agent.runner import AgentTiming, run_agent
from rmd.agent.settings import AgentEnvironmentError, AgentSettings, settings_from_env

__all__ = [
    "AgentEnvironmentError",
    "AgentSettings",
    "AgentTiming",
    "run_agent",
    "run_taskmanager",
    "settings_from_env",
]
