"""``rmd dev-cluster up|down|status|restart``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rmd_dev.cluster import DEFAULT_DIR, ClusterError, ControlPlane, describe, export_line
from rmd_dev.provision import DEFAULT_FLINK_VERSION, valid_flink_version


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="rmd dev-cluster")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start a local control plane with emulated nodes")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cluster directory")
    up.add_argument("--nodes", type=int, default=2, help="number of fake nodes (default 2)")
    up.add_argument(
        "--unpullable-images",
        default="",
        help="comma-separated image patterns the emulator fails to pull (ErrImagePull)",
    )
    up.add_argument("--no-emulator", action="store_true", help="do not start the node emulator")
    up.add_argument(
        "--flink",
        action="store_true",
        help="also provision a JDK and Apache Flink; prints FLINK_HOME and FLINK_ENTRYPOINT",
    )
    up.add_argument(
        "--flink-version",
        default=None,
        help=f"the Flink version for --flink (default {DEFAULT_FLINK_VERSION}; 1.20.x works too)",
    )
    up.add_argument(
        "--apiserver-arg",
        dest="apiserver_args",
        action="append",
        default=[],
        metavar="--FLAG=VALUE",
        help="add a flag to kube-apiserver's command line (repeatable), "
        "e.g. --apiserver-arg=--watch-cache=false",
    )
    for name, text in (("down", "stop everything 'up' started"), ("status", "what runs where")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cluster directory")
    restart = sub.add_parser(
        "restart", help="stop one component and start it again (same command line and ports)"
    )
    restart.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cluster directory")
    restart.add_argument("component", help="etcd, kube-apiserver, kube-scheduler, ...")
    restart.add_argument(
        "--down-for", type=float, default=0.0, help="seconds to keep it stopped (default 0)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    plane = ControlPlane(args.dir)
    if args.action == "up":
        if args.nodes < 0:
            print("rmd dev-cluster: --nodes must be 0 or more", file=sys.stderr)
            return 2
        if args.flink_version is not None and not args.flink:
            print("rmd dev-cluster: --flink-version needs --flink", file=sys.stderr)
            return 2
        flink_version = (args.flink_version or DEFAULT_FLINK_VERSION) if args.flink else None
        if flink_version is not None and not valid_flink_version(flink_version):
            print(
                f"rmd dev-cluster: --flink-version {flink_version!r} is not a release number; "
                f"give e.g. {DEFAULT_FLINK_VERSION} or 1.20.3",
                file=sys.stderr,
            )
            return 2
        try:
            state = plane.up(
                nodes=args.nodes,
                unpullable_images=[p for p in args.unpullable_images.split(",") if p],
                emulator=not args.no_emulator,
                flink_version=flink_version,
                apiserver_args=args.apiserver_args,
            )
        except ClusterError as exc:
            print(f"rmd dev-cluster: {exc}", file=sys.stderr)
            return 1
        print(export_line(state))
        return 0
    if args.action == "down":
        if plane.status() is None:
            print(f"rmd dev-cluster: nothing runs in {plane.dir}", file=sys.stderr)
            return 0
        busy = plane.down()
        if busy:
            print(f"rmd dev-cluster: ports still busy after down: {busy}", file=sys.stderr)
            return 1
        print(f"rmd dev-cluster: stopped the cluster in {plane.dir}", file=sys.stderr)
        return 0
    if args.action == "restart":
        try:
            restarted = plane.restart(args.component, down_for=args.down_for)
        except ClusterError as exc:
            print(f"rmd dev-cluster: {exc}", file=sys.stderr)
            return 1
        print(f"rmd dev-cluster: restarted {restarted.name} (pid {restarted.pid})", file=sys.stderr)
        return 0
    current = plane.status()
    if current is None:
        print(f"no cluster in {plane.dir}")
        return 1
    print(describe(current))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
