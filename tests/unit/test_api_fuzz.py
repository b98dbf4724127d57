"""schemathesis against the served /openapi.json of the real app (the in-memory engine of
api_fake_engine.py behind it): no 5xx and every response inside the document (status codes,
content types, headers, bodies), with the bearer token and without it.

CI runs a bounded, derandomised number of examples per operation; ``make fuzz`` runs many more
(``RMD_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from rmd.api.app import openapi_document
from tests.unit.api_fake_engine import make_app, make_engine, served_api

TOKEN = "fuzz-token-0123456789"
EXAMPLES = int(os.environ.get("RMD_FUZZ_EXAMPLES", "25"))
# A long poll the fuzzer asks for (up to 300 s) is cut to this, so a run stays short; the
# validation of ``wait`` (0..300) still sees the generated value's shape.
LONGEST_POLL_SECONDS = 0.05


class ServedInThread:
    """The app served by ApiRunner on a loopback port, on an event loop of its own thread
    (schemathesis calls it synchronously)."""

    def __init__(self, *, auth_token: str | None) -> None:
        self._auth_token = auth_token
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="fuzzed-api", daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        engine = make_engine(slots_per_taskmanager=2, max_slots=40)
        app = make_app(engine, auth_token=self._auth_token)
        async with served_api(app) as (port, _runner):
            self.port = port
            self._ready.set()
            await self._stop.wait()

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the fuzzed app did not start within 10 s")
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            stop = self._stop
            assert stop is not None
            self._loop.call_soon_threadsafe(stop.set)
            self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """The app as the daemon runs it with ``rmd.auth.token``: /v1 needs the bearer token (the
    document's ``security``)."""
    with ServedInThread(auth_token=TOKEN).running() as base_url:
        yield base_url


# The document the app serves at /openapi.json (test_served_document_is_the_fuzzed_one checks
# that; schemathesis's lazy fixture loader does not work with pytest 9).
# A request the document allows may still be refused with 422 where the rule spans fields or
# is beyond a pattern (a slot id names its TaskManager, an IPv6 address, a port up to 65535):
# that is the API's documented answer for semantically invalid values, not a bug. Likewise a
# schema-valid body over 64 KiB (10,000 long slot ids) gets the documented 413: JSON Schema
# cannot state a limit in bytes.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "413", "422"]
            },
            # 413: a body over the size limit (64 KiB) is refused before it is parsed.
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "404", "405", "409", "413", "422"]
            },
        },
        # The token is sent by the test (or left out on purpose), not generated and mutated.
        # Unknown query parameters are ignored, like unknown body fields, so a request with
        # one is no negative case ("allow-extra-parameters": false drops that mutation).
        "generation": {"with-security-parameters": False, "allow-extra-parameters": False},
    }
)
# The heartbeat channel is a WebSocket upgrade: beyond what schemathesis's HTTP calls can
# speak (its answer is 101 and a WebSocket); tests/unit/test_heartbeat_channel.py covers it.
schema = schemathesis.openapi.from_dict(json.loads(openapi_document()), config=CONFIG).exclude(
    path="/v1/taskmanagers/{taskmanager_id}/heartbeat-channel"
)


def test_served_document_is_the_fuzzed_one(served: str) -> None:
    base_url = served
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as answer:
        assert json.loads(answer.read()) == schema.raw_schema


def shorten_long_polls(case: Any) -> None:
    query = case.query
    if not query or "wait" not in query:
        return
    with contextlib.suppress(TypeError, ValueError):
        if 0 < float(query["wait"]) <= 300:
            query["wait"] = str(LONGEST_POLL_SECONDS)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_served_api_answers_within_its_document(case: Any, served: str) -> None:
    shorten_long_polls(case)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(base_url=served, headers=headers, timeout=10)


@schema.parametrize()
@settings(
    max_examples=max(3, EXAMPLES // 5),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_without_the_token_every_answer_is_within_the_document(case: Any, served: str) -> None:
    shorten_long_polls(case)
    response = case.call_and_validate(base_url=served, timeout=10)
    if case.path.startswith("/v1/"):
        assert response.status_code == 401, (case.method, case.path, response.text)
