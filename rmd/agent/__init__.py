"""The TaskManager agent (``rmd taskmanager``): registers a TaskManager pod with the daemon,
heartbeats, and optionally supervises the real TaskManager process.

``run_taskmanager(argv)`` is the command; ``run_agent(env=..., command=..., stop=...)`` is the
same agent as a coroutine (the node emulator runs many of them in one process). The agent's
HTTP side (:mod:`rmd.agent.runner`) is loaded on first use, so the command line starts the
TaskManager before it pays for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rmd.agent.cli import run_taskmanager
from rmd.agent.settings import AgentEnvironmentError, AgentSettings, settings_from_env

if TYPE_CHECKING:
    from rmd.agent.runner import AgentTiming, run_agent

__all__ = [
    "AgentEnvironmentError",
    "AgentSettings",
    "AgentTiming",
    "run_agent",
    "run_taskmanager",
    "settings_from_env",
]

_LAZY = {"AgentTiming", "run_agent"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("rmd.agent.runner"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
