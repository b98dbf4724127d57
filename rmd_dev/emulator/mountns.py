"""Give a container process its volumes, then become the container's command.

Run by the node emulator inside a fresh private mount namespace (``unshare --mount
--propagation private``)::

    python -m rmd_dev.emulator.mountns --scratch DIR [--bind SOURCE TARGET ...] -- COMMAND ...

Each SOURCE directory (a volume the emulator materialized) is bind-mounted read-only at
TARGET, as the kubelet mounts configMap and secret volumes, and the process then ``exec``s
COMMAND (same pid, same environment). Only this process and its children see the mounts;
they vanish with the namespace.

A TARGET that does not exist is created without touching the host: its deepest existing
ancestor is first covered by an overlay (lower: the ancestor itself, upper: a directory
under ``--scratch``), so the new directories live in the pod's scratch space while the
ancestor's content stays visible. The ancestor may not be ``/``.

Any failure prints one line to stderr (the container's log) and exits 128, as a container
runtime reports a container it could not start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_CANNOT_START = 128


class MountError(Exception):
    """A mount step failed; the message says which and why."""


def deepest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor."""
    current = path
    while not current.exists():
        current = current.parent
    return current


def _mount(*args: str) -> None:
    result = subprocess.run(
        ["mount", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().replace("\n", " ")
        raise MountError(f"mount {' '.join(args)}: {detail or f'exit {result.returncode}'}")


def prepare_targets(targets: Sequence[Path], *, scratch: Path) -> None:
    """Create the missing targets, each under an overlay of its deepest existing ancestor."""
    overlaid: list[Path] = []
    for target in targets:
        if target.is_dir():
            continue
        if target.exists():
            raise MountError(f"mount point {target} exists and is not a directory")
        ancestor = deepest_existing(target)
        if not any(ancestor == top or top in ancestor.parents for top in overlaid):
            if ancestor == Path("/"):
                raise MountError(
                    f"mount point {target}: no part of it exists below /, and / cannot be "
                    "overlaid; mount under an existing directory"
                )
            upper = scratch / f"upper-{len(overlaid)}"
            work = scratch / f"work-{len(overlaid)}"
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            _mount(
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={ancestor},upperdir={upper},workdir={work}",
                str(ancestor),
            )
            overlaid.append(ancestor)
        target.mkdir(parents=True, exist_ok=True)


def bind_read_only(source: Path, target: Path) -> None:
    _mount("--bind", str(source), str(target))
    _mount("-o", "remount,bind,ro", str(target))


def in_mount_namespace(
    argv: Sequence[str], *, binds: Sequence[tuple[Path, str]], scratch: Path
) -> list[str]:
    """The command line that runs ``argv`` in a fresh private mount namespace with each
    (SOURCE, TARGET) of ``binds`` mounted read-only (needs root and ``unshare``; raises
    :class:`MountError` saying so when either is missing)."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        raise MountError(
            "a private mount namespace needs root and unshare(1) (util-linux) installed"
        )
    words = [word for source, target in binds for word in ("--bind", str(source), target)]
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        "rmd_dev.emulator.mountns",
        "--scratch",
        str(scratch),
        *words,
        "--",
        *argv,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmd_dev.emulator.mountns")
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument(
        "--bind", nargs=2, action="append", default=[], metavar=("SOURCE", "TARGET")
    )
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    binds = [(Path(source), Path(target)) for source, target in args.bind]
    try:
        # Targets first: an overlay made for a later target must not hide an earlier bind.
        prepare_targets([target for _, target in binds], scratch=args.scratch)
        for source, target in binds:
            bind_read_only(source, target)
    except (MountError, OSError) as error:
        print(f"rmd node emulator: cannot mount the pod's volumes: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
    command = list(args.command)
    try:
        os.execv(command[0], command)
    except OSError as error:
        print(f"rmd node emulator: cannot run {command[0]}: {error}", file=sys.stderr)
    return EXIT_CANNOT_START


if __name__ == "__main__":
    raise SystemExit(main())
