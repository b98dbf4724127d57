"""The ``rmd`` command (and ``python -m rmd``).

The process first makes kubernetes_asyncio's generated classes load on first use
(:mod:`rmd.lazykube`, 31 MB less RSS in the daemon), then loads the CLI. The hook is the
process's own choice, made here: importing rmd as a library (``rmd.client``, tests) leaves
kubernetes_asyncio as it is.
"""

from __future__ import annotations


def main() -> int:
    from rmd import lazykube

    lazykube.install()  # before anything imports kubernetes_asyncio
    from rmd.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
