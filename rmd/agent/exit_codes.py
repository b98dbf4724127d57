"""Exit codes of ``rmd taskmanager`` other than a supervised command's own."""

from __future__ import annotations

EXIT_OK = 0  # stopped, released by the daemon, or the command exited 0
EXIT_USAGE = 2  # bad command line or environment
EXIT_REFUSED = 3  # the daemon refused the TaskManager (403) for a reason other than release
EXIT_REJECTED = 4  # the daemon rejects the agent's calls (401, other 4xx): fix the deployment
EXIT_CANNOT_EXECUTE = 126  # the command exists but cannot be run (as a shell reports it)
EXIT_NOT_FOUND = 127  # the command does not exist
