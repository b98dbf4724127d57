"""rmd.auth.token-file rotated without a restart (rmd.api.tokens.BearerTokens), on a manual
clock, and through the real application's authentication."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rmd.api.app import create_app
from rmd.api.tokens import BearerTokens
from rmd.core.clock import ManualClock
from tests.unit.api_fake_engine import make_engine, make_metrics

ClientFactory = Any


def rewrite(path: Path, token: str) -> None:
    """Write the file as a rotation does, with a modification time surely its own."""
    path.write_text(token + "\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_a_rewritten_file_is_taken_and_the_token_before_stays_accepted(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "token"
    rewrite(path, "first")
    tokens = BearerTokens("first", clock=clock, path=path, check_every=1.0)
    assert tokens.accepted() == (b"first",)

    rewrite(path, "second")
    assert tokens.accepted() == (b"first",)  # looked at once a second at most
    clock.advance(1.0)
    with capture_logs() as logs:
        assert tokens.accepted() == (b"second", b"first")
    assert [entry["event"] for entry in logs] == ["auth_token_rotated"]
    assert "second" not in repr(logs)  # never the token itself

    rewrite(path, "third")
    clock.advance(1.0)
    assert tokens.accepted() == (b"third", b"second")  # the oldest is refused now


@pytest.mark.parametrize("breakage", ["empty", "gone"])
def test_an_unusable_file_changes_nothing(tmp_path: Path, breakage: str) -> None:
    clock = ManualClock()
    path = tmp_path / "token"
    rewrite(path, "first")
    tokens = BearerTokens("first", clock=clock, path=path)
    if breakage == "empty":
        rewrite(path, "")
    else:
        path.unlink()

    with capture_logs() as logs:
        for _ in range(3):
            clock.advance(1.0)
            assert tokens.accepted() == (b"first",)
    assert [entry["event"] for entry in logs] == ["auth_token_file_unusable"]  # said once


async def test_the_api_takes_the_rotated_token_without_a_restart(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    clock = ManualClock()
    path = tmp_path / "token"
    rewrite(path, "first")
    engine = make_engine()
    app = create_app(
        engine=engine,
        metrics=make_metrics(engine),
        auth_tokens=BearerTokens("first", clock=clock, path=path),
    )
    client = await aiohttp_client(app)

    async def status_with(token: str) -> int:
        response = await client.get("/v1/status", headers={"Authorization": f"Bearer {token}"})
        return int(response.status)

    assert await status_with("second") == 401
    rewrite(path, "second")
    clock.advance(1.0)
    assert await status_with("second") == 200  # the new token
    assert await status_with("first") == 200  # running TaskManagers keep theirs
    rewrite(path, "third")
    clock.advance(1.0)
    assert await status_with("first") == 401
    assert await status_with("third") == 200
