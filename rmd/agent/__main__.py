"""``python -m rmd.agent [--] [command args ...]``: the same as ``rmd taskmanager``."""

import sys

from rmd.agent.cli import run_taskmanager

sys.exit(run_taskmanager(sys.argv[1:]))
