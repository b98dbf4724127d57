"""Run the machine's ``kubectl`` against a cluster (the demos use it as a user would)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path


class KubectlError(RuntimeError):
    """kubectl exited with an error; the message holds the command and its stderr."""


async def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    """``kubectl ARGS`` with ``KUBECONFIG=kubeconfig``; its stdout (60 s at most)."""
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            ["kubectl", *args],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise KubectlError(f"kubectl {' '.join(args)}: no answer in 60 s") from exc
    if result.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout
