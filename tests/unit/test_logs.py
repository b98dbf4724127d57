"""No credential reaches a log line: the redaction processor, and the case that leaked it —
aiohttp logging a request it could not parse, raw headers included."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import structlog

from rmd.logs import REDACTED, configure_logging, redact_credentials
from tests.unit.api_fake_engine import make_app, make_engine, served_api

TOKEN = "s3cret-token-9f2c"


def test_bearer_tokens_are_redacted_in_every_field_and_nesting() -> None:
    event = {
        "event": f"Authorization: Bearer {TOKEN}",
        "exception": [{"exc_value": f"bad header b'Bearer {TOKEN}\\x00'", "frames": []}],
        "url": f"http://x/?token={TOKEN}&a=1",
        "count": 3,
    }
    redacted = redact_credentials(None, "info", dict(event))
    assert TOKEN not in repr(redacted)
    assert redacted["event"] == f"Authorization: Bearer {REDACTED}"
    assert redacted["url"] == f"http://x/?token={REDACTED}&a=1"
    assert redacted["count"] == 3


@pytest.fixture
def real_logging() -> Iterator[None]:
    """The daemon's own logging set-up, restored afterwards (it is process-wide)."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(level="debug")
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("real_logging")
async def test_a_request_aiohttp_cannot_parse_does_not_log_the_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with served_api(make_app(make_engine(), auth_token=TOKEN)) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                "X-Broken: a\x00b\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = (await reader.readline()).decode()
            await reader.read()
        finally:
            writer.close()
    assert status_line.split()[1] == "400"
    logged = capsys.readouterr().err
    assert "malformed_request" in logged
    assert TOKEN not in logged
