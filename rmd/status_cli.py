"""``rmd status``: the daemon's TaskManagers and jobs as tables."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from rmd.config import agent_env

__all__ = ["DEFAULT_URL", "StatusError", "fetch_status_text", "render", "run_status"]

DEFAULT_URL = "http://127.0.0.1:8090"
DEFAULT_TIMEOUT = 10.0


class StatusError(Exception):
    """A failure to show: one line for the user."""


def run_status(argv: Sequence[str]) -> int:
    """The ``rmd status`` command; returns the exit code (0 ok, 1 failed, 2 usage)."""
    args = _parser().parse_args(list(argv))
    try:
        token = _read_token(args.token_file)
        text = asyncio.run(fetch_status_text(args.url, token=token, timeout=args.timeout))
    except StatusError as error:
        print(f"rmd status: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


async def fetch_status_text(url: str, *, token: str | None, timeout: float) -> str:
    """Fetch /v1/status, /v1/taskmanagers and /v1/jobs from ``url`` and render them."""
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout, headers=headers) as session:
            try:
                status = await _get(session, f"{base}/v1/status")
            except _Standby as standby:  # high availability: ask the leader it names
                base = standby.leader_url
                status = await _get(session, f"{base}/v1/status")
            taskmanagers = await _get(session, f"{base}/v1/taskmanagers")
            jobs = await _get(session, f"{base}/v1/jobs")
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        reason = str(error) or type(error).__name__
        raise StatusError(
            f"cannot reach the daemon at {base} ({reason}); is it running? Pass --url to "
            "point elsewhere."
        ) from None
    return render(status=status, taskmanagers=taskmanagers, jobs=jobs)


def render(*, status: dict[str, Any], taskmanagers: dict[str, Any], jobs: dict[str, Any]) -> str:
    """The three documents as text: a summary line, a TaskManager table, a job table."""
    counts = status.get("taskmanagers", {})
    lines = [
        "TaskManagers: "
        + ", ".join(f"{counts.get(state, 0)} {state}" for state in _STATES)
        + f"; slots: {status.get('slots_allocated', 0)} allocated, "
        f"{status.get('slots_free', 0)} free of {status.get('slots_total', 0)}; "
        f"jobs: {status.get('jobs', 0)}, pending slot demand: "
        f"{status.get('pending_slot_demand', 0)}"
        + ("; new pods THROTTLED after start failures" if status.get("starts_throttled") else ""),
        "",
    ]
    tm_rows = [
        [
            tm["taskmanager_id"],
            tm["state"],
            f"{tm['slots_allocated']}/{tm['slots_total']}",
            tm.get("address") or "-",
            tm.get("idle_since") or "-",
            _problem_text(tm.get("problem")),
        ]
        for tm in taskmanagers.get("taskmanagers", [])
    ]
    lines += _table(["TASKMANAGER", "STATE", "SLOTS", "ADDRESS", "IDLE SINCE", "PROBLEM"], tm_rows)
    lines.append("")
    job_rows = [
        [
            job["job_id"],
            str(job["slots_required"]),
            str(job["slots_allocated"]),
            "yes" if job["fulfilled"] else "no",
            job.get("unfulfilled_reason") or "-",
        ]
        for job in jobs.get("jobs", [])
    ]
    lines += _table(["JOB", "REQUIRED", "ALLOCATED", "FULFILLED", "REASON"], job_rows)
    return "\n".join(lines) + "\n"


_STATES = ("registered", "pending", "requested", "releasing")
_PROBLEM_WIDTH = 80


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


def _problem_text(problem: object) -> str:
    if not isinstance(problem, dict):
        return "-"
    text = f"{problem.get('reason', '')}: {problem.get('message', '')}"
    return text if len(text) <= _PROBLEM_WIDTH else text[: _PROBLEM_WIDTH - 3] + "..."


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return [header[0] + ": none"]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


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
        prog="rmd status", description="Show the daemon's TaskManagers and jobs as tables."
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
    return parser
