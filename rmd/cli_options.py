"""Command-line options that several ``rmd`` commands share."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_configuration_arguments(parser: argparse.ArgumentParser) -> None:
    """``--conf-dir DIR`` (→ ``args.conf_dir``, a Path or None) and repeatable
    ``-D KEY=VALUE`` (→ ``args.overrides``, a list), as Flink's own scripts take them."""
    parser.add_argument(
        "--conf-dir",
        type=Path,
        default=None,
        help="directory with config.yaml or flink-conf.yaml (default: $FLINK_CONF_DIR, ./conf)",
    )
    parser.add_argument(
        "-D",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a configuration key (repeatable; what is given last wins, over the file too)",
    )
