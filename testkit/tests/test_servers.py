"""The test servers: NATS and Postgres started, restarted and stopped for real, and whether a
Docker engine answers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StorageType

from jobs_testkit.servers import (
    NatsServer,
    PostgresServer,
    RestartableServer,
    docker_available,
    free_port,
)

FIVE_MIB = 5 * 1024 * 1024


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path / "pg") as server:
        yield server


async def _stream_messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return info.state.messages
    finally:
        await nc.close()


async def test_nats_restart_keeps_jetstream_data_and_port(nats_server: NatsServer) -> None:
    port = nats_server.port
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="EVENTS", subjects=["events.>"], storage=StorageType.FILE)
        await js.publish("events.one", b"hello")
    finally:
        await nc.close()

    nats_server.restart()

    assert nats_server.port == port
    assert nats_server.running
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        assert (await js.stream_info("EVENTS")).state.messages == 1
        assert (await js.get_msg("EVENTS", 1)).data == b"hello"
        # Beyond the 1 MiB default, within the configured 8 MiB max_payload.
        big = bytes(range(256)) * (FIVE_MIB // 256)
        ack = await js.publish("events.big", big, timeout=10)
        assert ack.seq == 2
        assert (await js.get_msg("EVENTS", 2)).data == big
    finally:
        await nc.close()


async def test_nats_kill_then_start_recovers_stream(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="JOBS", subjects=["jobs.>"], storage=StorageType.FILE)
        await js.publish("jobs.one", b"job")
    finally:
        await nc.close()

    nats_server.kill()
    assert not nats_server.running
    nats_server.start()

    assert await _stream_messages(nats_server.url, "JOBS") == 1


async def test_nats_pause_blocks_connects_until_resume(nats_server: NatsServer) -> None:
    nats_server.pause()
    try:
        assert nats_server.running
        # A Client of our own rather than nats.connect(): a failed connect leaves its transport
        # open, and only close() on the client releases it (else a ResourceWarning fails us).
        client = NATS()
        try:
            with pytest.raises(TimeoutError):
                await client.connect(
                    nats_server.url,
                    connect_timeout=1,
                    max_reconnect_attempts=0,
                    allow_reconnect=False,
                )
        finally:
            await client.close()
    finally:
        nats_server.resume()

    nc = await nats.connect(nats_server.url, connect_timeout=2)
    try:
        await nc.flush(timeout=2)
    finally:
        await nc.close()


def test_nats_start_failure_reports_log_tail(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        server = NatsServer(tmp_path / "nats", port=blocker.getsockname()[1])
        with pytest.raises(RuntimeError, match="log tail"):
            server.start(timeout=5)
        assert not server.running
        server.close()


async def _fetch_notes(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row["body"] for row in await conn.fetch("SELECT body FROM notes ORDER BY id")]
    finally:
        await conn.close()


async def test_postgres_restart_and_kill_keep_data(pg_server: PostgresServer) -> None:
    port = pg_server.port
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        await conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        await conn.execute("INSERT INTO notes (body) VALUES ($1)", "kept")
    finally:
        await conn.close()

    pg_server.restart()
    assert pg_server.port == port
    assert await _fetch_notes(pg_server.dsn()) == ["kept"]

    # A session open during the crash must not stop the server from coming back.
    survivor = await asyncpg.connect(pg_server.dsn())
    try:
        await survivor.execute("INSERT INTO notes (body) VALUES ($1)", "committed before kill")
        pg_server.kill()
        assert not pg_server.running
    finally:
        survivor.terminate()
    pg_server.start()

    assert pg_server.port == port
    assert await _fetch_notes(pg_server.dsn()) == ["kept", "committed before kill"]


def test_postgres_refuses_a_taken_port(pg_server: PostgresServer, tmp_path: Path) -> None:
    # The port answers pg_isready, but it is not this server's: start must not be fooled.
    intruder = PostgresServer(tmp_path / "intruder", port=pg_server.port)
    try:
        with pytest.raises(RuntimeError, match="Address already in use"):
            intruder.start()
        assert not intruder.running
    finally:
        intruder.close()
    assert pg_server.running


async def test_postgres_pause_freezes_open_sessions(pg_server: PostgresServer) -> None:
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        pg_server.pause()
        try:
            # Paused backends too, not just the postmaster: an open session stalls as well.
            with pytest.raises(TimeoutError):
                await conn.fetchval("SELECT 1", timeout=0.5)
        finally:
            pg_server.resume()
        assert await conn.fetchval("SELECT 2", timeout=5) == 2
    finally:
        await conn.close()


def test_servers_satisfy_protocol(tmp_path: Path) -> None:
    servers: list[RestartableServer] = [
        NatsServer(tmp_path / "n", port=free_port()),
        PostgresServer(tmp_path / "p"),
    ]
    for server in servers:
        assert not server.running
        server.close()


class _DockerEngineStandIn(BaseHTTPRequestHandler):
    """The two calls `docker_available` makes of an engine: the API version, then a ping."""

    def do_GET(self) -> None:
        if self.path.endswith("/version"):
            body = json.dumps({"ApiVersion": "1.43", "MinAPIVersion": "1.24"}).encode()
            kind = "application/json"
        elif self.path.endswith("/_ping"):
            body, kind = b"OK", "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest would show every request


def test_docker_available_is_true_when_an_engine_answers_its_ping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DockerEngineStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{server.server_address[1]}")
        assert docker_available() is True
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_docker_available_is_false_when_no_engine_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A socket path nothing listens on: the engine the variable names is not there.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    assert docker_available() is False
