"""The ``rmd`` command: one entry point, sub-commands as in API.md."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

USAGE = """\
rmd <command> [options]

commands:
  daemon        run the resource manager in the foreground
  taskmanager   the TaskManager agent (the TaskManager image's entrypoint)
  dev-cluster   a real local Kubernetes control plane with emulated nodes (up/down/status)
  status        the daemon's TaskManagers and jobs (tables, JSON, YAML; --watch)
  podspec       print the TaskManager pod this configuration produces, as YAML
  session       start|stop|list Flink session clusters (JobManager Deployment + Services)
  application   start a Flink application cluster (the job's jar runs in the JobManager)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "daemon":
        from rmd.daemon import run_daemon

        return run_daemon(rest)
    if command == "taskmanager":
        from rmd.agent import run_taskmanager

        return run_taskmanager(rest)
    if command == "dev-cluster":
        try:
            from rmd_dev.cli import main as dev_cluster_main
        except ImportError:
            print(
                "rmd dev-cluster: the development tools (package rmd_dev) are not installed here;"
                " install rmd from its source tree (pip install -e .) to use them",
                file=sys.stderr,
            )
            return 2
        return dev_cluster_main(rest)
    if command == "status":
        from rmd.status_cli import run_status

        return run_status(rest)
    if command == "podspec":
        from rmd.podspec_cli import run_podspec

        return run_podspec(rest)
    if command == "session":
        from rmd.session.cli import run_session

        return run_session(rest)
    if command == "application":
        from rmd.session.cli import run_application

        return run_application(rest)
    print(f"rmd: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2


def _argparse_error(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2
