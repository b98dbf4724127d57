"""rmd.eventloop: uvloop when it imports, asyncio's own loop when it does not."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from rmd import eventloop


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_runs_on_uvloop_when_it_imports() -> None:
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(_loop_type()) is uvloop.Loop


def test_falls_back_to_asyncio_when_uvloop_does_not_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert eventloop.loop_factory() is None
    assert eventloop.loop_name() == "asyncio"
    loop_type: type[asyncio.AbstractEventLoop] = eventloop.run(_loop_type())
    assert not issubclass(loop_type, uvloop.Loop)
    assert issubclass(loop_type, asyncio.BaseEventLoop)  # asyncio's own
