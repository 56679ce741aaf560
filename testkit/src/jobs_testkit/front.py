"""A round-robin TCP front for several replicas of one HTTP service: one address for clients,
each new connection sent to the next backend in rotation, as a Kubernetes Service does.

Taking a backend out of rotation (its pod terminating: the endpoint removed) sends it no new
connection but leaves the ones it holds open, as kube-proxy does: only the backend itself
ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

_CHUNK = 65536


class RoundRobinFront:
    """Listens on `127.0.0.1:port` (a free one) in the running event loop; `admit` and
    `withdraw` change the rotation, `close` stops listening and cuts every connection."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends: list[tuple[str, int]] = list(backends)
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        # Connections sent to each backend, and those no backend in rotation took (refused).
        self.sent: dict[tuple[str, int], int] = {}
        self.unrouted = 0

    async def start(self) -> RoundRobinFront:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "start the front first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admit(self, backend: tuple[str, int]) -> None:
        if backend not in self.backends:
            self.backends.append(backend)

    def withdraw(self, backend: tuple[str, int]) -> None:
        if backend in self.backends:
            self.backends.remove(backend)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        # Each backend in rotation once, from the next in turn: one that refuses (it just
        # exited) is skipped, as a Service's connection would be retried by its client.
        backends = list(self.backends)
        if not backends:
            return None
        first = next(self._turn)
        for i in range(len(backends)):
            backend = backends[(first + i) % len(backends)]
            try:
                streams = await asyncio.open_connection(*backend)
            except OSError:
                continue
            self.sent[backend] = self.sent.get(backend, 0) + 1
            return streams
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        # Cut by `close`: the connection just ends, as when a proxy goes.
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)
        self._pipes.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await self._connect()
            if upstream is None:
                self.unrouted += 1
                return
            up_reader, up_writer = upstream
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Bytes from `source` to `sink` until `source` ends, then `sink`'s end too (a half close
    passed on, as a TCP proxy does); a reset on either side ends both."""
    try:
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()
    finally:
        with contextlib.suppress(Exception):
            await sink.drain()
