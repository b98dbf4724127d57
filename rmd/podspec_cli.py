"""``rmd podspec``: print the TaskManager pod a configuration produces, as YAML.

For review before deploying (``rmd podspec -D ... | kubectl apply --dry-run=server -f -``).
Bad configuration exits 2 with the one-line ConfigError; nothing touches a cluster.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from rmd.cli_options import add_configuration_arguments
from rmd.config.flinkconf import ConfigError, FlinkConfiguration
from rmd.config.settings import RmdSettings
from rmd.kube.podspec import TaskManagerPodFactory

PROG = "rmd podspec"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Print the TaskManager pod this configuration produces, as YAML. The daemon adds "
            "an ownerReference to its JobManager Deployment; everything else is as shown."
        ),
    )
    add_configuration_arguments(parser)
    parser.add_argument(
        "--name",
        default=None,
        help="pod name to show (default: <kubernetes.cluster-id>-taskmanager-1-1)",
    )
    return parser


def run_podspec(argv: Sequence[str]) -> int:
    """Print the pod as YAML on stdout; 0 on success, 2 on bad arguments or configuration."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # argparse's own usage errors and --help
        return int(exit_.code) if isinstance(exit_.code, int) else 2
    try:
        conf = FlinkConfiguration.load(conf_dir=args.conf_dir, overrides=args.overrides)
        settings = RmdSettings.from_configuration(conf)
        factory = TaskManagerPodFactory.from_configuration(conf, settings)
        name = args.name or f"{settings.cluster_id}-taskmanager-1-1"
        pod = factory.build(pod_name=name, owner=None)
    except (ConfigError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    for warning in conf.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    sys.stdout.write(yaml.safe_dump(pod, sort_keys=False, default_flow_style=False))
    return 0
