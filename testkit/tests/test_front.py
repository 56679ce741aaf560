"""The round-robin front: new connections turn through the backends in rotation, one taken
out keeps the connections it holds, and with none in rotation a connection is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jobs_testkit.front import RoundRobinFront


async def _backend(name: bytes) -> asyncio.Server:
    """A server that answers every line with its name, until the client goes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            writer.write(name + b"\n")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def _address(server: asyncio.Server) -> tuple[str, int]:
    return ("127.0.0.1", int(server.sockets[0].getsockname()[1]))


@pytest.fixture
async def backends() -> AsyncIterator[list[asyncio.Server]]:
    servers = [await _backend(b"a"), await _backend(b"b")]
    yield servers
    for server in servers:
        server.close()
        await server.wait_closed()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _ask(front: RoundRobinFront) -> tuple[bytes, Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    return await _again((reader, writer)), (reader, writer)


async def _again(connection: Connection) -> bytes:
    reader, writer = connection
    writer.write(b"who\n")
    return await reader.readline()


async def test_turns_and_withdraws(backends: list[asyncio.Server]) -> None:
    a, b = (_address(s) for s in backends)
    front = await RoundRobinFront([a, b]).start()
    try:
        first, held = await _ask(front)
        second, other = await _ask(front)
        assert {first, second} == {b"a\n", b"b\n"}
        # Out of rotation: no new connection, but the one it holds still works.
        withdrawn = a if first == b"a\n" else b
        front.withdraw(withdrawn)
        for _ in range(3):
            answer, (_, writer) = await _ask(front)
            assert answer == second
            writer.close()
        assert await _again(held) == first
        assert front.sent[withdrawn] == 1
        for _, writer in (held, other):
            writer.close()
    finally:
        await front.close()


async def test_refuses_with_no_backend(backends: list[asyncio.Server]) -> None:
    front = await RoundRobinFront([]).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        assert await reader.read() == b""
        writer.close()
        assert front.unrouted == 1
        front.admit(_address(backends[0]))
        answer, (_, writer) = await _ask(front)
        assert answer == b"a\n"
        writer.close()
    finally:
        await front.close()
