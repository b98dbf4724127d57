"""README's tables of configuration keys, generated from the option table.

``make config-docs`` (``python -m rmd_dev.config_docs``) rewrites the part of README.md
between the markers; ``--check`` only says whether it is up to date (a unit test does too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from rmd.config.option import OptionKey
from rmd.config.options import DAEMON_OPTIONS, JOBMANAGER_OPTIONS, POD_OPTIONS

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- config-docs: generated from rmd/config/options.py by `make config-docs` -->"
END = "<!-- config-docs: end -->"


def options_markdown() -> str:
    """The three tables (the daemon, the TaskManager pod, the JobManager), between the markers."""
    return "\n".join(
        [
            BEGIN,
            "",
            "The daemon:",
            "",
            *_table(DAEMON_OPTIONS),
            "",
            "The TaskManager pod:",
            "",
            *_table(POD_OPTIONS),
            "",
            "The JobManager pod and its Services (`rmd session start`):",
            "",
            *_table(JOBMANAGER_OPTIONS),
            "",
            END,
        ]
    )


def _table(options: Iterable[OptionKey]) -> list[str]:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for option in options:
        key = f"`{option.key}`"
        if option.deprecated_keys:
            key += " (formerly " + ", ".join(f"`{old}`" for old in option.deprecated_keys) + ")"
        meaning = option.meaning
        if option.fallback_keys:
            meaning += "; falls back to " + ", then ".join(f"`{k}`" for k in option.fallback_keys)
        rows.append(f"| {key} | {option.shown_default()} | {meaning} |")
    return rows


def with_generated_section(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`options_markdown`."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    return readme[:start] + options_markdown() + readme[end + len(END) :]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    generated = with_generated_section(current)
    if generated == current:
        return 0
    if args.check:
        print(f"{args.readme}: the configuration tables are stale; run make config-docs")
        return 1
    args.readme.write_text(generated, encoding="utf-8")
    print(f"{args.readme}: configuration tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
