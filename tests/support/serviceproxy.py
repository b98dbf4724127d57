"""A stand-in for a Kubernetes Service in front of several daemons: a TCP proxy on
127.0.0.1 that hands each connection to the first backend (round robin) that accepts it,
as kube-proxy does once a dead pod has left the Service's endpoints. A frozen backend still
accepts connections (the kernel does): :meth:`ServiceProxy.remove` takes it out, as a
failing readiness probe would.

::

    async with ServiceProxy(["127.0.0.1:8091", "127.0.0.1:8092"]) as service:
        service.url  # http://127.0.0.1:<port>
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from rmd_dev.cluster import free_port

QUIET_ITERATIONS = 20


class ServiceProxy:
    def __init__(self, backends: Sequence[str]) -> None:
        self._backends = [tuple(b.rsplit(":", 1)) for b in backends]
        self._next = 0
        self._port = free_port()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def remove(self, backend: str) -> None:
        """Take ``backend`` (``host:port``) out of the endpoints."""
        self._backends = [b for b in self._backends if f"{b[0]}:{b[1]}" != backend]

    def add(self, backend: str) -> None:
        """Put ``backend`` (``host:port``) into the endpoints (again)."""
        self._backends.append(tuple(backend.rsplit(":", 1)))

    def cut(self) -> None:
        """Close every open connection (both sides), as a network partition would end them."""
        for writer in list(self._writers):
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> ServiceProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close every connection (no cancelling: each handler ends as its reads end) and
        wait for the handlers, so no socket is left behind."""
        if self._server is not None:
            # Accept no more, then let the connections already accepted be set up before the
            # close: Python 3.11 drops (and leaks, unclosed) a connection whose set-up runs
            # after Server.close() (its _attach asserts that the server still has sockets).
            loop = asyncio.get_running_loop()
            for sock in self._server.sockets:
                loop.remove_reader(sock.fileno())
            for _ in range(QUIET_ITERATIONS):
                await asyncio.sleep(0)
            self._server.close()
        # A connection accepted just before the close is handed over a few loop iterations
        # later: keep closing until several iterations in a row bring none.
        quiet = 0
        while quiet < QUIET_ITERATIONS:
            if not self._connections and not self._writers:
                quiet += 1
                await asyncio.sleep(0)
                continue
            quiet = 0
            for writer in list(self._writers):
                writer.close()
            async with asyncio.timeout(10):
                await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Called as each connection is made (a plain callback, so none goes untracked)."""
        self._writers.add(writer)
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers = [writer]
        try:
            upstream = await self._connect()
            if upstream is None:  # no endpoint: the connection is refused, as a Service does
                return
            up_reader, up_writer = upstream
            writers.append(up_writer)
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in writers:
                w.close()
            for w in writers:
                with contextlib.suppress(OSError):
                    await w.wait_closed()
                self._writers.discard(w)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self._backends)):
            host, port = self._backends[self._next % len(self._backends)]
            self._next += 1
            try:
                return await asyncio.open_connection(host, int(port))
            except OSError:
                continue
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()
