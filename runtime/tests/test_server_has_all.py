"""`server_has_all`: what a connection sent before it is on the wire before its last PING, so
the PONG means the server has it. Checked on the bytes a real nats-server receives, through a
recording TCP relay between the client and the server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import nats
import pytest
from nats.aio.msg import Msg

from jobs_runtime.bus import server_has_all


class RecordingRelay:
    """Forwards one client's bytes to the server and back, keeping what the client sent."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.sent = bytearray()
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self._target)
        self._writers += [client_w, server_w]

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, keep: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await r.read(65536):
                    if keep:
                        self.sent += data
                    w.write(data)
                    await w.drain()

        self._tasks += [
            asyncio.ensure_future(pipe(client_r, server_w, True)),
            asyncio.ensure_future(pipe(server_r, client_w, False)),
        ]

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def relay(nats_url: str) -> AsyncIterator[tuple[RecordingRelay, str]]:
    target = urlsplit(nats_url)
    assert target.hostname is not None
    assert target.port is not None
    recording = RecordingRelay(target.hostname, target.port)
    port = await recording.start()
    credentials = f"{target.username}:{target.password}@" if target.username else ""
    yield recording, f"nats://{credentials}127.0.0.1:{port}"
    await recording.close()


async def _ignore(msg: Msg) -> None:
    pass


def _after(sent: bytes, marker: bytes) -> bytes:
    return sent[sent.index(marker) :]


async def test_a_subscription_precedes_the_last_ping(
    relay: tuple[RecordingRelay, str],
) -> None:
    recording, url = relay
    nc = await nats.connect(url)
    try:
        await nc.subscribe("server-has-all.probe", cb=_ignore)
        await server_has_all(nc)
        tail = _after(bytes(recording.sent), b"SUB server-has-all.probe")
        assert b"PING\r\n" in tail, "no PING after the SUB: its PONG proves nothing"
    finally:
        await nc.close()


async def test_one_flush_lets_its_ping_overtake_a_pending_subscription(
    relay: tuple[RecordingRelay, str],
) -> None:
    """Why `server_has_all` flushes twice: nats-py 2.16 writes `flush()`'s PING ahead of a SUB
    still in its pending buffer. If a release fixes that, this fails: one flush then does."""
    recording, url = relay
    nc = await nats.connect(url)
    try:
        await nc.flush()
        before = len(recording.sent)
        await nc.subscribe("server-has-all.once", cb=_ignore)
        await nc.flush()
        await asyncio.sleep(0.2)  # the flusher's SUB reaches the relay (only recording here)
        tail = bytes(recording.sent[before:])
        assert tail.index(b"PING\r\n") < tail.index(b"SUB server-has-all.once")
    finally:
        await nc.close()
