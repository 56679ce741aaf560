"""Byte-level fuzzing of the gateway's whole ASGI app: raw paths, query strings, header values
and bodies as uvicorn hands them on, with and without a good token, the job system up or down.
Whatever arrives: no `5xx` but the documented `503` (with `Retry-After`, only while the job
system is down), and no traceback in the log.

schemathesis (tests/integration/test_fuzz.py) drives the documented API with valid UTF-8 and
sane sizes; these requests are what it never sends. Found this way: invalid UTF-8 inside a JSON
string, nesting past msgspec's limit, a job id followed by `%0A`, a 5,000-digit `limit`.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Final

import jwt
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.adapters.http import GatewayPorts, build_app
from gateway.auth import TokenVerifier
from gateway.budgets import Spending
from gateway.cache import FinishedJobs
from gateway.hub import Hub, StreamPolicy
from jobs_proto.events import JobRequested
from jobs_testkit import rawhttp
from jobs_testkit.rawhttp import LogCapture, RawRequest, send

from ..fakes import FakeJobSystem

SECRET: Final = "fuzz-secret-0123456789abcdef0123456789"
OWNER: Final = "alice"
# A job of the owner's that every example can reach, so that paths with its id get past 404.
KNOWN_JOB: Final = uuid.UUID("0b5f6a51-3c1e-4e0a-9d1b-6f1b3a7f2e10")
# Per route: enough to meet each hostile value a few times, a few seconds in all.
FUZZ: Final = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def token(sub: str = OWNER) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 3600)}, SECRET, "HS256")


def reset(system: FakeJobSystem, down: bool) -> None:
    """Only the owner's known job in the system; every port `down` or not."""
    system.reset()
    system.stream.stored.append(
        JobRequested(
            job_id=KNOWN_JOB,
            occurred_at=datetime(2030, 1, 2, tzinfo=UTC),
            user_id=OWNER,
            job_type="title_generation",
            input={"topic": "tides"},
        )
    )
    system.down = down


SYSTEM: Final = FakeJobSystem()
APP: Final = build_app(
    GatewayPorts(
        verifier=TokenVerifier([SECRET]),
        bus=SYSTEM.stream,
        store=SYSTEM.store,
        requested=SYSTEM.stream,
        max_body_bytes=64 * 1024,
        cors_origins=("https://app.example",),
        finished=FinishedJobs(1024 * 1024),
        # A budget, so admissions go through the reservation too.
        spending=Spending(SYSTEM.budgets, user_micros=1_000_000_000),
        demo_page=True,
        # A quiet stream sends its first bytes (a keepalive) at once, and the fuzz client, seeing
        # them, hangs up: no example waits 15 s for a stream that has nothing to say.
        hub=Hub(StreamPolicy(keepalive_s=0.001)),
    )
)
# Every route, and those of the known job with its id filled in.
ROUTES: Final = [
    *rawhttp.route_table(APP),
    ("GET", f"/api/jobs/{KNOWN_JOB}"),
    ("GET", f"/api/jobs/{KNOWN_JOB}/events"),
    ("GET", f"/api/jobs/{KNOWN_JOB}/history"),
    ("POST", f"/api/jobs/{KNOWN_JOB}/cancel"),
]
HEADER_NAMES: Final = (
    "authorization",
    "content-type",
    "content-length",
    "idempotency-key",
    "if-none-match",
    "last-event-id",
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
    "accept",
    "cookie",
    "x-forwarded-for",
)
QUERY_NAMES: Final = ("limit", "cursor", "status", "type", "access_token", "offset")

# The owner of the known job, with or without a JSON content type (so that bodies reach the
# JSON check), for requests that must get past the token to reach a route's code ...
AS_OWNER: Final = [
    {"authorization": f"Bearer {token()}".encode()},
    {"authorization": f"Bearer {token()}".encode(), "content-type": b"application/json"},
]
OWNER_HEADERS: Final = st.sampled_from(AS_OWNER)
# ... and anyone at all for the others.
ANYONE_HEADERS: Final = st.sampled_from(
    [{}, {"authorization": f"Bearer {token('mallory')}".encode()}, *AS_OWNER]
)


def assert_no_server_error(status: int, headers: dict[bytes, bytes], down: bool) -> None:
    if status == 503 and down:
        assert int(headers[b"retry-after"]) > 0
        return
    assert status < 500, status


async def answer_without_a_server_error(request: RawRequest, down: bool) -> None:
    reset(SYSTEM, down)
    with LogCapture.installed() as log:
        answer = await send(APP, request)
    assert_no_server_error(answer.status, answer.headers, down)
    assert log.tracebacks() == []


@pytest.mark.parametrize(("method", "template"), ROUTES)
@FUZZ
@given(data=st.data(), down=st.booleans())
async def test_no_request_to_a_route_gets_a_5xx_or_logs_a_traceback(
    method: str, template: str, data: st.DataObject, down: bool
) -> None:
    request = data.draw(
        rawhttp.requests_to(
            method,
            template,
            header_names=HEADER_NAMES,
            query_names=QUERY_NAMES,
            fixed_headers=OWNER_HEADERS,
        )
    )
    await answer_without_a_server_error(request, down)


@FUZZ
@given(
    request=rawhttp.requests_anywhere(
        ROUTES, header_names=HEADER_NAMES, fixed_headers=ANYONE_HEADERS
    ),
    down=st.booleans(),
)
async def test_no_request_anywhere_gets_a_5xx_or_logs_a_traceback(
    request: RawRequest, down: bool
) -> None:
    await answer_without_a_server_error(request, down)


# The four requests that answered 500 with a stack trace (issue 18, finding 6), each answered
# as the contract says.
AUTH: Final = ((b"authorization", f"Bearer {token()}".encode()),)
JSON: Final = (*AUTH, (b"content-type", b"application/json"))


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (RawRequest("POST", b"/api/jobs", headers=JSON, body=b'{"type": "\xff"}'), 400),
        (RawRequest("POST", b"/api/jobs", headers=JSON, body=b"[" * 5000), 400),
        (RawRequest("GET", f"/api/jobs/{KNOWN_JOB}%0A".encode(), headers=AUTH), 404),
        (RawRequest("POST", f"/api/jobs/{KNOWN_JOB}%0A/cancel".encode(), headers=AUTH), 404),
        (RawRequest("GET", f"/api/jobs/{KNOWN_JOB}%0A/events".encode(), headers=AUTH), 404),
        (RawRequest("GET", b"/api/jobs", query=b"limit=" + b"9" * 5000, headers=AUTH), 422),
        (
            RawRequest(
                "GET",
                f"/api/jobs/{KNOWN_JOB}/history".encode(),
                query=b"limit=" + b"9" * 5000,
                headers=AUTH,
            ),
            422,
        ),
    ],
)
async def test_the_requests_that_answered_500(request_: RawRequest, status: int) -> None:
    reset(SYSTEM, down=False)
    with LogCapture.installed() as log:
        answer = await send(APP, request_)
    assert answer.status == status, answer.body[:300]
    assert answer.headers[b"content-type"] == b"application/problem+json"
    problem = msgspec.json.decode(answer.body)
    if status == 422:
        assert [e["parameter"] for e in problem["errors"]] == ["limit"]
    assert log.tracebacks() == []
