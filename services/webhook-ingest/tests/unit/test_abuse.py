"""The endpoint under abuse, in-process: the rate limit per source (`429`), a request that
cannot be signed refused `401` before its body is read, the cap on large bodies in memory in
all and per source (`503`), the body deadline (`408`), each counted by reason and logged in
one line, and none leaking a slot."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Final

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette

from webhook_ingest.adapters.http import PATH, webhook_app
from webhook_ingest.limits import LARGE_BODY_BYTES, IngressLimits
from webhook_ingest.verify import WebhookVerifier, parse_secrets

from ..fakes import CountingObserver, FakeEvents, FakeParking, FakeProgress, FakeResults

SECRET: Final = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW: Final = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
MIB: Final = 1024 * 1024
LIMIT: Final = 4 * MIB
JOB_ID: Final = uuid.uuid4()
JOB: Final = {"job": str(JOB_ID)}
# The signed body names its job in `webhook`, as Replicate echoes it.
HOOK: Final = (
    b'"webhook": "https://hooks.example/api/webhooks/replicate?job=%s"' % str(JOB_ID).encode()
)


# Every app of this module reports here; the tests compare counts before and after.
OBSERVER: Final = CountingObserver()


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def app(limits: IngressLimits, monotonic: Monotonic | None = None) -> Starlette:
    return webhook_app(
        verifier=WebhookVerifier(parse_secrets(SECRET), clock=lambda: NOW),
        events=FakeEvents(),
        progress=FakeProgress(),
        results=FakeResults(),
        parking=FakeParking(),
        max_bytes=LIMIT,
        limits=limits,
        clock=lambda: NOW,
        monotonic=monotonic or Monotonic(),
        observer=OBSERVER,
    )


def client(application: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=("203.0.113.7", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=10)


def signed(body: bytes) -> dict[str, str]:
    return {
        "webhook-id": "msg_abuse",
        "webhook-timestamp": str(int(NOW.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("msg_abuse", NOW, body.decode()),
    }


def refusals(reason: str) -> int:
    return OBSERVER.webhooks[reason]


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


async def test_a_source_over_its_rate_gets_429_until_refilled() -> None:
    monotonic = Monotonic()
    before = refusals("rate_limited")
    async with client(app(IngressLimits(rate_per_s=0.5, burst=3), monotonic)) as http:
        answers = [(await http.post(PATH, content=b"{}")).status_code for _ in range(3)]
        assert answers == [401, 401, 401]

        limited = await http.post(PATH, content=b"{}")
        assert_problem(limited, 429)
        assert limited.headers["retry-after"] == "2"  # one token at 0.5/s

        # Before the size check too: an oversized body costs nothing to refuse.
        assert_problem(await http.post(PATH, content=b"x" * (LIMIT + 1)), 429)

        monotonic.now += 2
        assert (await http.post(PATH, content=b"{}")).status_code == 401
    assert refusals("rate_limited") == before + 2


async def test_forwarded_for_counts_only_behind_trusted_proxies() -> None:
    limits = IngressLimits(rate_per_s=0.001, burst=1)
    async with client(app(limits)) as http:
        assert (await http.post(PATH, headers={"x-forwarded-for": "198.51.100.1"})).status_code
        # Ignored without trusted proxies: a new header is the same source.
        spoofed = await http.post(PATH, headers={"x-forwarded-for": "198.51.100.2"})
        assert_problem(spoofed, 429)

    behind_proxy = IngressLimits(rate_per_s=0.001, burst=1, trusted_proxy_hops=1)
    async with client(app(behind_proxy)) as http:
        for address in ("198.51.100.1", "198.51.100.2"):
            response = await http.post(PATH, headers={"x-forwarded-for": f"6.6.6.6, {address}"})
            assert response.status_code == 401, address
        again = await http.post(PATH, headers={"x-forwarded-for": "7.7.7.7, 198.51.100.1"})
        assert_problem(again, 429)


class HeldBody:
    """A body that sends more than 1 MiB, then waits to be let go; `waiting` tells that the
    endpoint has started reading it."""

    def __init__(self, first: int = LARGE_BODY_BYTES + 1) -> None:
        self.first = first
        self.waiting = asyncio.Event()
        self.go = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"{" * self.first
        self.waiting.set()
        await self.go.wait()
        yield b"}"

    def declared(self) -> dict[str, str]:
        """`Content-Length` of the whole body, as a sender that is not chunking says it."""
        return {"content-length": str(self.first + 1)}


def fresh(webhook_id: str = "msg_forged") -> dict[str, str]:
    """Every signature header, and a timestamp within the window: what anybody can make up."""
    stamp = str(int(NOW.timestamp()))
    return {"webhook-id": webhook_id, "webhook-timestamp": stamp, "webhook-signature": "v1,AAAA"}


def stale() -> dict[str, str]:
    return {**fresh(), "webhook-timestamp": str(int(NOW.timestamp()) - 6 * 60)}


def from_source(address: str, headers: Mapping[str, str]) -> dict[str, str]:
    """As our one trusted proxy forwards a request from `address`."""
    return {**headers, "x-forwarded-for": address}


async def test_large_bodies_beyond_the_cap_get_503_and_small_ones_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = refusals("too_many_large_bodies")
    reported_before = len(OBSERVER.large_bodies_seen)
    caplog.set_level(logging.INFO, logger="webhook_ingest")
    async with client(app(IngressLimits(max_large_bodies=1))) as http:
        held = HeldBody()
        first = asyncio.create_task(http.post(PATH, content=held.__aiter__(), headers=fresh()))
        await asyncio.wait_for(held.waiting.wait(), 5)

        declared = await http.post(PATH, content=b"x" * (2 * MIB), headers=fresh())
        assert_problem(declared, 503)
        assert int(declared.headers["retry-after"]) > 0
        # A chunked body is caught once it has been counted past 1 MiB.
        chunked = HeldBody()
        chunked.go.set()
        assert_problem(await http.post(PATH, content=chunked.__aiter__(), headers=fresh()), 503)
        # The size comes before the cap: an oversized body is refused for what it is.
        assert_problem(await http.post(PATH, content=b"x" * (LIMIT + 1), headers=fresh()), 413)
        # Small bodies need no slot.
        small = b'{"id": "p1", "status": "succeeded", %s}' % HOOK
        assert (await http.post(PATH, params=JOB, content=small, headers=signed(small))).is_success

        held.go.set()
        assert (await first).status_code == 401  # forged, read whole once let go

        # Every slot is back, whatever the answer was (401, 413, 200).
        for content, status in ((b"x" * (2 * MIB), 401), (b"x" * (LIMIT + 1), 413)):
            assert (await http.post(PATH, content=content, headers=fresh())).status_code == status
        big = b'{"id": "p1", "status": "succeeded", %s, "output": "%s"}' % (HOOK, b"w" * (2 * MIB))
        assert (await http.post(PATH, params=JOB, content=big, headers=signed(big))).is_success
    assert refusals("too_many_large_bodies") == before + 2
    # The gauge followed each slot taken and given back, and ends with none in use.
    reported = OBSERVER.large_bodies_seen[reported_before:]
    assert reported[-1] == 0
    assert max(reported) == 1
    lines = [r for r in caplog.records if r.getMessage() == "webhook refused"]
    assert [r.__dict__["reason"] for r in lines].count("too_many_large_bodies") == 2
    assert all(r.__dict__["source"] == "203.0.113.7" for r in lines)


async def test_large_uploads_that_cannot_be_signed_get_401_at_once_and_hold_no_slot() -> None:
    """The starvation attack of issue 18: slow uploads over 1 MiB with their signature headers
    missing or stale. Each is answered `401` before its body is read, so none holds one of the
    large-body slots; meanwhile a real signed large webhook takes the only one."""
    async with client(app(IngressLimits(max_large_bodies=1))) as http:
        uploads = [HeldBody() for _ in range(4)]
        for upload, headers in zip(uploads, [{}, stale(), {}, stale()], strict=True):
            refused = await http.post(
                PATH, content=upload.__aiter__(), headers={**headers, **upload.declared()}
            )
            assert_problem(refused, 401)
            assert refused.headers["connection"] == "close"
            assert not upload.waiting.is_set()  # not a byte of it was asked for

        # Without a declared size the body is counted and dropped as it comes, holding nothing.
        chunked = HeldBody()
        pending = asyncio.create_task(http.post(PATH, content=chunked.__aiter__()))
        await asyncio.wait_for(chunked.waiting.wait(), 5)
        big = b'{"id": "p1", "status": "succeeded", %s, "output": "%s"}' % (HOOK, b"w" * (2 * MIB))
        assert (await http.post(PATH, params=JOB, content=big, headers=signed(big))).is_success
        chunked.go.set()
        assert_problem(await pending, 401)


async def test_one_source_holds_at_most_its_share_of_the_large_body_slots() -> None:
    limits = IngressLimits(max_large_bodies=3, max_large_bodies_per_source=2, trusted_proxy_hops=1)
    async with client(app(limits)) as http:
        attacker = "198.51.100.66"
        held = [HeldBody() for _ in range(2)]
        hanging = [
            asyncio.create_task(
                http.post(PATH, content=h.__aiter__(), headers=from_source(attacker, fresh()))
            )
            for h in held
        ]
        for h in held:
            await asyncio.wait_for(h.waiting.wait(), 5)
        third = await http.post(
            PATH, content=b"x" * (2 * MIB), headers=from_source(attacker, fresh())
        )
        assert_problem(third, 503)
        assert "from this address" in third.json()["detail"]

        big = b'{"id": "p1", "status": "succeeded", %s, "output": "%s"}' % (HOOK, b"w" * (2 * MIB))
        replicate = from_source("203.0.113.9", signed(big))
        assert (await http.post(PATH, params=JOB, content=big, headers=replicate)).is_success

        for h in held:
            h.go.set()
        assert [(await t).status_code for t in hanging] == [401, 401]


async def test_a_trickling_body_gets_408_and_the_connection_closed() -> None:
    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"{"
            await asyncio.sleep(0.05)  # the behaviour under test: a client trickling its body

    before = refusals("read_timeout")
    async with client(app(IngressLimits(read_timeout_s=0.2, max_large_bodies=1))) as http:
        response = await http.post(PATH, content=trickle(), headers=fresh())
        assert_problem(response, 408)
        assert response.headers["connection"] == "close"

        # A large body that stalls gives its slot back when its time is up.
        stalled = HeldBody()
        assert_problem(await http.post(PATH, content=stalled.__aiter__(), headers=fresh()), 408)
        assert (await http.post(PATH, content=b"x" * (2 * MIB), headers=fresh())).status_code == 401

        # Unsigned, it was always going to be a 401: that is what it gets when its time is up.
        unsigned = await http.post(PATH, content=trickle())
        assert_problem(unsigned, 401)
        assert unsigned.headers["connection"] == "close"
    assert refusals("read_timeout") == before + 2


async def test_every_refusal_is_counted_by_reason() -> None:
    body = b'{"id": "p1", "status": "succeeded", %s}' % HOOK
    elsewhere = b'{"id": "p2", "status": "succeeded"}'
    cases: list[tuple[str, bytes, Mapping[str, str], Mapping[str, str], int]] = [
        ("payload_too_large", b"x" * (LIMIT + 1), {}, JOB, 413),
        ("missing_headers", body, {}, JOB, 401),
        ("bad_signature", body, {**signed(body), "webhook-signature": "v1,AAAA"}, JOB, 401),
        ("bad_job_id", body, signed(body), {"job": "42"}, 400),
        ("job_mismatch", body, signed(body), {"job": str(uuid.uuid4())}, 400),
        ("stored", body, signed(body), JOB, 200),
        ("parked", elsewhere, signed(elsewhere), {}, 200),
    ]
    async with client(app(IngressLimits())) as http:
        for reason, content, headers, params, status in cases:
            before = refusals(reason)
            response = await http.post(PATH, content=content, headers=headers, params=params)
            assert response.status_code == status, reason
            assert refusals(reason) == before + 1, reason
