"""``rmd status``: the daemon's TaskManagers and jobs as tables, JSON or YAML; ``--watch``
follows them (redrawn in place on a terminal, a new table per change on a pipe)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from rmd.config import agent_env
from rmd.status_render import OUTPUT_FORMATS, Snapshot, render

__all__ = ["DEFAULT_URL", "StatusError", "fetch_snapshot", "run_status", "watch"]

DEFAULT_URL = "http://127.0.0.1:8090"
DEFAULT_TIMEOUT = 10.0
DEFAULT_INTERVAL = 1.0
# Cursor home, clear the screen: a terminal shows the latest table only.
REDRAW = "\x1b[H\x1b[2J"
# Moves with the clock while nothing happens: not a change worth a new table on a pipe.
_TICKING_FIELDS = ("oldest_wait_seconds",)
_CONSISTENT_READS = 3


class StatusError(Exception):
    """A failure to show: one line for the user."""


def run_status(argv: Sequence[str]) -> int:
    """The ``rmd status`` command; returns the exit code (0 ok, 1 failed, 2 usage, 130 when
    a watch is ended with Ctrl-C)."""
    args = _parser().parse_args(list(argv))
    try:
        token = _read_token(args.token_file)
        if args.watch:
            asyncio.run(
                watch(
                    args.url,
                    token=token,
                    timeout=args.timeout,
                    interval=args.interval,
                    output=args.output,
                    out=sys.stdout,
                    redraw=sys.stdout.isatty(),
                )
            )
        else:
            snapshot = asyncio.run(fetch_once(args.url, token=token, timeout=args.timeout))
            sys.stdout.write(render(snapshot, output=args.output, now=time.time()))
    except StatusError as error:
        print(f"rmd status: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def fetch_once(url: str, *, token: str | None, timeout: float) -> Snapshot:
    async with _session(token=token, timeout=timeout) as session:
        return await fetch_snapshot(session, url)


async def watch(
    url: str,
    *,
    token: str | None,
    timeout: float,
    interval: float,
    output: str,
    out: TextIO,
    redraw: bool,
    wall: Callable[[], float] = time.time,
) -> None:
    """Poll the daemon every ``interval`` seconds until cancelled. ``redraw`` (a terminal):
    clear and draw the latest state every poll, so ages move; otherwise write a new
    rendering only when the state changed (JSON as one line per change, YAML as documents)."""
    last: dict[str, Any] | None = None
    async with _session(token=token, timeout=timeout) as session:
        while True:
            snapshot = await fetch_snapshot(session, url)
            if redraw:
                out.write(REDRAW + render(snapshot, output=output, now=wall()))
                out.flush()
            else:
                comparable = _without_ticking_fields(snapshot)
                if comparable != last:
                    last = comparable
                    out.write(_stream_rendering(snapshot, output=output, now=wall()))
                    out.flush()
            await asyncio.sleep(interval)


async def fetch_snapshot(session: aiohttp.ClientSession, url: str) -> Snapshot:
    """``/v1/status``, ``/v1/taskmanagers`` and ``/v1/jobs`` of the daemon at ``url``.

    Three requests are no atomic read: ``/v1/status`` is read again after the lists, and the
    lists again while it changed meanwhile (a few times at most), so the summary and the
    tables tell the same story."""
    base = url.rstrip("/")
    try:
        try:
            status = await _get(session, f"{base}/v1/status")
        except _Standby as standby:  # high availability: ask the leader it names
            base = standby.leader_url
            status = await _get(session, f"{base}/v1/status")
        for _attempt in range(_CONSISTENT_READS):
            taskmanagers = await _get(session, f"{base}/v1/taskmanagers")
            jobs = await _get(session, f"{base}/v1/jobs")
            after = await _get(session, f"{base}/v1/status")
            steady = _without_ticking(after) == _without_ticking(status)
            status = after
            if steady:
                break
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        reason = str(error) or type(error).__name__
        raise StatusError(
            f"cannot reach the daemon at {base} ({reason}); is it running? Pass --url to "
            "point elsewhere."
        ) from None
    return Snapshot(
        status=status,
        taskmanagers=_list_of(taskmanagers, "taskmanagers", url=f"{base}/v1/taskmanagers"),
        jobs=_list_of(jobs, "jobs", url=f"{base}/v1/jobs"),
    )


def _session(*, token: str | None, timeout: float) -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), headers=headers)


def _stream_rendering(snapshot: Snapshot, *, output: str, now: float) -> str:
    if output == "json":
        return json.dumps(snapshot.document(), separators=(",", ":")) + "\n"
    if output == "yaml":
        return "---\n" + render(snapshot, output=output, now=now)
    return render(snapshot, output=output, now=now) + "\n"


def _without_ticking_fields(snapshot: Snapshot) -> dict[str, Any]:
    document = snapshot.document()
    document["status"] = _without_ticking(snapshot.status)
    return document


def _without_ticking(status: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if key not in _TICKING_FIELDS}


def _list_of(document: dict[str, Any], key: str, *, url: str) -> list[dict[str, Any]]:
    items = document.get(key)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise StatusError(f"{url} answered without a list of {key}: is this an rmd daemon?")
    return items


class _Standby(StatusError):
    """A standby daemon answered; ``leader_url`` is where the leader answers."""

    def __init__(self, message: str, *, leader_url: str) -> None:
        super().__init__(message)
        self.leader_url = leader_url.rstrip("/")


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as response:
        if response.status >= 400:
            refusal = await _refusal(response)
            leader_url = await _leader_url(response)
            if leader_url is not None:
                raise _Standby(refusal, leader_url=leader_url)
            raise StatusError(refusal)
        try:
            document = await response.json(content_type=None)
        except ValueError:
            raise StatusError(f"{url} did not answer with JSON: is this an rmd daemon?") from None
    if not isinstance(document, dict):
        raise StatusError(f"{url} answered with unexpected JSON: is this an rmd daemon?")
    return document


async def _refusal(response: aiohttp.ClientResponse) -> str:
    detail = ""
    try:
        problem = await response.json(content_type=None)
        if isinstance(problem, dict):
            detail = str(problem.get("detail") or "")
    except ValueError:
        pass
    text = f"the daemon answered {response.status} {response.reason} for {response.url.path}"
    if detail:
        text += f": {detail}"
    if response.status == 401:
        text += " (pass --token-file)"
    return text


async def _leader_url(response: aiohttp.ClientResponse) -> str | None:
    if response.status != 503:
        return None
    try:
        problem = await response.json(content_type=None)
    except ValueError:
        return None
    url = problem.get("leader_url") if isinstance(problem, dict) else None
    return url if isinstance(url, str) and url else None


def _read_token(token_file: Path | None) -> str | None:
    if token_file is None:
        return os.environ.get(agent_env.AUTH_TOKEN) or None
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise StatusError(f"cannot read the token file {token_file}: {error.strerror}") from None
    if not token:
        raise StatusError(f"the token file {token_file} is empty")
    return token


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmd status",
        description="Show the daemon's TaskManagers and jobs as tables, JSON or YAML.",
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the daemon's HTTP API (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the bearer token (default: ${agent_env.AUTH_TOKEN}, if set)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the daemon (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        default="table",
        help="table (default), json or yaml: the /v1/status, /v1/taskmanagers and /v1/jobs "
        "documents as one",
    )
    parser.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="keep following the daemon: redrawn in place on a terminal, a new rendering per "
        "change otherwise (JSON: one line per change); Ctrl-C ends it",
    )
    parser.add_argument(
        "--interval",
        type=_positive_seconds,
        default=DEFAULT_INTERVAL,
        help=f"seconds between two reads with --watch (default {DEFAULT_INTERVAL:g})",
    )
    return parser


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is no number of seconds above 0, e.g. 2")
    return seconds
