"""A service's NATS connection over TLS, as production runs it: the server's certificate is
verified against `NATS_TLS_CA` alone, and a server signed by another authority is refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs_proto.permissions import NatsUser, Permissions
from jobs_runtime.bus import connect
from jobs_runtime.settings import NatsAuth
from jobs_testkit.servers import NatsServer
from jobs_testkit.servers.tls import make_server_certificate
from jobs_testkit.waiting import eventually

USER = NatsUser(
    user="tls-service",
    password="tls-service-password",
    permissions=Permissions(publish=("tls.>",), subscribe=("tls.>", "_INBOX.>")),
)


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", anonymous=False, tls=True)
    server.authorize([USER])
    with server:
        yield server


async def test_a_service_talks_to_nats_over_verified_tls(tls_nats: NatsServer) -> None:
    assert tls_nats.url.startswith("tls://")
    assert tls_nats.certificate is not None
    auth = NatsAuth(
        user=USER.user, password=USER.password, tls_ca=str(tls_nats.certificate.ca_file)
    )
    nc = await connect(tls_nats.url, "tls-test", auth=auth)
    try:
        received = await nc.subscribe("tls.echo")
        await nc.publish("tls.echo", b"over tls")
        message = await received.next_msg(timeout=5)
        assert message.data == b"over tls"
        assert nc.connected_url is not None
        assert nc.connected_url.scheme == "tls"
    finally:
        await nc.close()


async def test_a_server_signed_by_another_authority_is_refused(
    tls_nats: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = make_server_certificate(tmp_path / "another-ca")
    auth = NatsAuth(user=USER.user, password=USER.password, tls_ca=str(stranger.ca_file))
    # A service keeps trying (NATS may come later); every try fails the certificate check.
    attempt = asyncio.create_task(connect(tls_nats.url, "tls-test", auth=auth))

    async def refused() -> bool:
        return "CERTIFICATE_VERIFY_FAILED" in caplog.text

    try:
        await eventually(refused, within=30.0)
        assert not attempt.done()
    finally:
        attempt.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attempt
