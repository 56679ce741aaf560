"""Fuzzing the whole HTTP app with hypothesis: whatever arrives, no `5xx` but the bus-down `503`,
no `200` without a configured secret's signature, and every signed prediction for a job id
stored.

In-process over `httpx.ASGITransport` rather than against the real process: the properties are
about the app's decisions, hypothesis needs hundreds of examples in seconds and shrinks best
without sockets and timing in the way, and the fakes let an example choose whether the bus is up.
The real process, with uvicorn and NATS, is covered by the integration tests.
"""

from __future__ import annotations

import base64
import json
import string
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from jobs_testkit import rawhttp
from webhook_ingest.adapters.http import PATH, webhook_app
from webhook_ingest.limits import IngressLimits
from webhook_ingest.verify import WebhookVerifier, parse_secrets

from ..fakes import FakeBus

CURRENT: Final = "whsec_" + base64.b64encode(b"fuzzed current key").decode()
PREVIOUS: Final = "whsec_" + base64.b64encode(b"fuzzed previous key").decode()
CONFIGURED: Final = (PREVIOUS, CURRENT)
STRANGER: Final = "whsec_" + base64.b64encode(b"not one of ours").decode()
NOW: Final = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
LIMIT: Final = 64 * 1024
FUZZ: Final = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


BUS: Final = FakeBus()
APP: Final = webhook_app(
    verifier=WebhookVerifier(parse_secrets(",".join(CONFIGURED)), clock=lambda: NOW),
    events=BUS.events,
    progress=BUS.progress,
    results=BUS.results,
    parking=BUS.parking,
    max_bytes=LIMIT,
    # The rate limit has its own tests; here every example must reach the checks behind it.
    limits=IngressLimits(rate_per_s=0),
    clock=lambda: NOW,
)


async def post(
    body: bytes, headers: dict[str, str], params: Sequence[tuple[str, str]], *, bus_down: bool
) -> httpx.Response:
    BUS.down = bus_down
    BUS.events.stored.clear()
    transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        # Latin-1 bytes: httpx would refuse a non-ASCII `str`, a server must take any octet.
        raw = {name.encode(): value.encode("latin-1") for name, value in headers.items()}
        return await http.post(PATH, content=body, headers=raw, params=list(params))


# Header values as HTTP can carry them: visible ASCII and spaces.
header_text = st.text(alphabet=string.printable[:95], max_size=80)
webhook_ids = st.one_of(
    st.just("msg_2k1zkFZQ1wGx"), header_text.filter(lambda s: s.strip() != ""), st.just("")
)
timestamps = st.one_of(
    st.integers(-300, 300).map(lambda d: str(int((NOW + timedelta(seconds=d)).timestamp()))),
    st.integers(-(10**15), 10**15).map(str),  # far past and far future
    st.integers(253_402_300_800, 999_999_999_999).map(str),  # beyond `datetime`'s year 9999
    # "¹²³": digits to `str.isdigit`, not to `int` (sent as Latin-1, as HTTP allows).
    st.sampled_from(["", " ", "-1", "1e9", "0x10", "¹²³", "nan", "9" * 40, "1.5"]),
    header_text,
)
random_signatures = st.one_of(
    st.binary(min_size=0, max_size=40).map(lambda b: "v1," + base64.b64encode(b).decode()),
    st.sampled_from(["", "v1,", "v1,!!!!", "v1,AAAA", "v2,AAAA", "v1", ",", "v1,A"]),
    header_text,
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin-1",
        ]
    ),
    header_text,
)
query_params = st.lists(
    st.tuples(
        st.one_of(st.just("job"), st.text(max_size=10)),
        st.one_of(st.uuids().map(str), st.text(max_size=40)),
    ),
    max_size=4,
)
statuses = st.sampled_from(["starting", "processing", "succeeded", "failed", "canceled", "aborted"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
outputs = st.one_of(
    st.none(), st.text(max_size=200), st.lists(st.text(max_size=30), max_size=10), json_values
)


def hook(job_id: uuid.UUID) -> str:
    return f"https://hooks.example{PATH}?job={job_id}"


@st.composite
def predictions(draw: st.DrawFn) -> dict[str, Any]:
    """Bodies Replicate could send: the fields the project reads, in their types, plus extras."""
    body: dict[str, Any] = {
        "id": draw(st.text(min_size=1, max_size=30)),
        "status": draw(statuses),
        "output": draw(outputs),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "error": st.none() | st.text(max_size=50),
        "logs": st.none() | st.text(max_size=50),
        "data_removed": st.booleans(),
        "model": st.none() | st.text(max_size=30),
        "metrics": st.none()
        | st.dictionaries(
            st.sampled_from(["predict_time", "total_time"]),
            json_values | st.just(10**400),  # beyond any float
        ),
        "created_at": st.none() | st.text(max_size=30),
        "webhook": st.none() | st.uuids().map(hook) | st.text(max_size=60),
        "unknown_field": json_values,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    return body


def near_predictions() -> st.SearchStrategy[bytes]:
    """Almost predictions: a field missing, of the wrong type, or the wrong status."""
    broken = predictions().flatmap(
        lambda p: st.sampled_from(["id", "status", "output", "data_removed", "metrics"]).map(
            lambda field: {**p, field: {"not": "right"}} if field != "output" else p
        )
    )
    missing = predictions().map(lambda p: {k: v for k, v in p.items() if k != "status"})
    return st.one_of(broken, missing).map(lambda p: json.dumps(p).encode())


bodies = st.one_of(
    st.binary(max_size=512),
    json_values.map(lambda v: json.dumps(v).encode()),
    predictions().map(lambda p: json.dumps(p).encode()),
    near_predictions(),
    # Nesting around the decoder's recursion limit.
    st.integers(1, 3000).map(
        lambda depth: (
            b'{"id": "p", "status": "succeeded", "output": %s1%s}' % (b"[" * depth, b"]" * depth)
        )
    ),
    # Around the size limit; filled rather than drawn, since drawing 64 KiB is slow.
    st.tuples(st.integers(LIMIT - 2, LIMIT + 2), st.binary(min_size=1, max_size=1)).map(
        lambda sized: sized[1] * sized[0]
    ),
)


@st.composite
def unsigned_headers(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    """Each signed header missing, empty or random; signatures from strangers or over other
    content, but never a configured secret's signature over this request."""
    webhook_id = draw(webhook_ids)
    timestamp = draw(timestamps)
    entries = draw(st.lists(random_signatures, max_size=6))
    fresh = timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 10
    if draw(st.booleans()) and fresh:
        at = datetime.fromtimestamp(int(timestamp), UTC)
        text = body.decode("utf-8", errors="replace")
        entries.append(Webhook(STRANGER).sign(webhook_id, at, text))
        # A configured key, but over a different id: a replayed signature.
        entries.append(Webhook(CURRENT).sign(webhook_id + "x", at, text))
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": " ".join(entries),
        "content-type": draw(content_types),
    }
    present = draw(st.sets(st.sampled_from(sorted(headers))))
    return {name: value for name, value in headers.items() if name in present}


def sign(body: bytes, secret: str, webhook_id: str, at: datetime) -> str:
    return Webhook(secret).sign(webhook_id, at, body.decode())


@FUZZ
@given(data=st.data(), body=bodies, params=query_params, bus_down=st.booleans())
async def test_nothing_unsigned_gets_anything_but_401_or_413(
    data: st.DataObject, body: bytes, params: list[tuple[str, str]], bus_down: bool
) -> None:
    headers = data.draw(unsigned_headers(body))
    response = await post(body, headers, params, bus_down=bus_down)
    assert response.status_code in (401, 413), response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert BUS.events.stored == []


@FUZZ
@given(
    body=bodies.filter(lambda b: len(b) <= LIMIT),
    params=query_params,
    secret=st.sampled_from(CONFIGURED),
    webhook_id=webhook_ids.filter(lambda s: s.strip() != ""),
    skew_s=st.integers(-299, 299),
    extra=st.lists(random_signatures, max_size=3),
    content_type=content_types,
    bus_down=st.booleans(),
)
async def test_signed_requests_get_200_400_or_the_bus_down_503(
    body: bytes,
    params: list[tuple[str, str]],
    secret: str,
    webhook_id: str,
    skew_s: int,
    extra: list[str],
    content_type: str,
    bus_down: bool,
) -> None:
    at = NOW + timedelta(seconds=skew_s)
    try:
        signature = sign(body, secret, webhook_id, at)
    except UnicodeDecodeError:
        return  # not UTF-8: nobody can sign it (the unsigned property covers such bodies)
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join([*extra, signature]),
        "content-type": content_type,
    }
    response = await post(body, headers, params, bus_down=bus_down)
    allowed = {200, 400} if not bus_down else {400, 503}
    assert response.status_code in allowed, response.text
    if response.status_code == 503:
        assert int(response.headers["retry-after"]) > 0


@FUZZ
@given(
    prediction=predictions(),
    job_id=st.uuids(),
    other_params=query_params.map(lambda ps: [(k, v) for k, v in ps if k != "job"]),
    secret=st.sampled_from(CONFIGURED),
    webhook_id=webhook_ids.filter(lambda s: s.strip() != ""),
    skew_s=st.integers(-299, 299),
)
async def test_a_signed_prediction_for_a_job_id_is_stored(
    prediction: dict[str, Any],
    job_id: uuid.UUID,
    other_params: list[tuple[str, str]],
    secret: str,
    webhook_id: str,
    skew_s: int,
) -> None:
    body = json.dumps({**prediction, "webhook": hook(job_id)}).encode()
    at = NOW + timedelta(seconds=skew_s)
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": sign(body, secret, webhook_id, at),
    }
    params = [("job", str(job_id)), *other_params]
    response = await post(body, headers, params, bus_down=False)
    assert response.status_code == 200, response.text
    (event,) = BUS.events.stored
    assert event.job_id == job_id


@FUZZ
@given(
    prediction=predictions(),
    signed_job=st.uuids(),
    asked_job=st.uuids(),
    with_param=st.booleans(),
    webhook_id=webhook_ids.filter(lambda s: s.strip() != ""),
)
async def test_a_signed_prediction_only_ever_speaks_for_its_signed_job(
    prediction: dict[str, Any],
    signed_job: uuid.UUID,
    asked_job: uuid.UUID,
    with_param: bool,
    webhook_id: str,
) -> None:
    """Whatever `?job=` says, an event is stored only for the job the signed body names."""
    body = json.dumps({**prediction, "webhook": hook(signed_job)}).encode()
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(NOW.timestamp())),
        "webhook-signature": sign(body, CURRENT, webhook_id, NOW),
    }
    params = [("job", str(asked_job))] if with_param else []
    response = await post(body, headers, params, bus_down=False)
    if with_param and asked_job != signed_job:
        assert response.status_code == 400, response.text
        assert BUS.events.stored == []
    else:
        assert response.status_code == 200, response.text
        assert [e.job_id for e in BUS.events.stored] == [signed_job]


# --- byte level --------------------------------------------------------------------------------
# Raw paths, query strings, header values and bodies as uvicorn hands them on, which httpx (above)
# would tidy up or refuse to send: bytes that are not UTF-8 in the query string, a job id with a
# newline, headers with obs-text, bodies nested past the decoder's limit.

ROUTES: Final = rawhttp.route_table(APP)
HEADER_NAMES: Final = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "x-forwarded-for",
)


@FUZZ
@given(
    request=rawhttp.requests_to("POST", PATH, header_names=HEADER_NAMES, query_names=["job"]),
    bus_down=st.booleans(),
)
async def test_no_unsigned_bytes_get_anything_but_401_or_413(
    request: rawhttp.RawRequest, bus_down: bool
) -> None:
    BUS.down = bus_down
    BUS.events.stored.clear()
    with rawhttp.LogCapture.installed() as log:
        answer = await rawhttp.send(APP, request)
    # A path the route does not take (a suffix) is a 404 or a redirect, never anything more.
    allowed = {401, 413} if request.raw_path == PATH.encode() else {307, 404, 405, 401, 413}
    assert answer.status in allowed, answer.body[:300]
    assert BUS.events.stored == []
    assert log.tracebacks() == []


@FUZZ
@given(request=rawhttp.requests_anywhere(ROUTES, header_names=HEADER_NAMES))
async def test_no_request_anywhere_gets_a_5xx_or_logs_a_traceback(
    request: rawhttp.RawRequest,
) -> None:
    BUS.down = False
    with rawhttp.LogCapture.installed() as log:
        answer = await rawhttp.send(APP, request)
    assert answer.status < 500, answer.body[:300]
    assert log.tracebacks() == []


@FUZZ
@given(
    body=rawhttp.json_bodies,
    job=st.one_of(st.uuids().map(str), rawhttp.header_values.map(lambda b: b.decode("latin-1"))),
    bus_down=st.booleans(),
)
async def test_no_signed_bytes_get_a_5xx_but_the_bus_down_503(
    body: bytes, job: str, bus_down: bool
) -> None:
    # Signed: the hostile bodies reach the decoder and the handler behind the signature.
    at = NOW
    try:
        signature = sign(body, CURRENT, "msg_fuzz", at)
    except UnicodeDecodeError:
        return  # not UTF-8: nobody can sign it (the unsigned properties cover such bodies)
    headers = (
        (b"webhook-id", b"msg_fuzz"),
        (b"webhook-timestamp", str(int(at.timestamp())).encode()),
        (b"webhook-signature", signature.encode()),
    )
    query = b"job=" + job.encode("utf-8", "surrogateescape")
    request = rawhttp.RawRequest("POST", PATH.encode(), query=query, headers=headers, body=body)
    BUS.down = bus_down
    with rawhttp.LogCapture.installed() as log:
        answer = await rawhttp.send(APP, request)
    assert answer.status in ({200, 400, 503} if bus_down else {200, 400}), answer.body[:300]
    assert log.tracebacks() == []


@pytest.mark.parametrize("declared", ["²".encode("latin-1"), "١٢".encode(), b"12" * 10, b"-3"])
async def test_a_signed_webhook_with_an_odd_content_length_is_no_5xx(declared: bytes) -> None:
    # Only a webhook past its signature headers reads its body, so this must be signed to reach
    # the body's length check; `isdigit` alone takes "²" (obs-text, as uvicorn hands it on).
    BUS.down = False
    body = b'{"id": "p", "status": "processing"}'
    webhook_id = "msg_odd_length"
    headers = (
        (b"webhook-id", webhook_id.encode()),
        (b"webhook-timestamp", str(int(NOW.timestamp())).encode()),
        (b"webhook-signature", sign(body, CURRENT, webhook_id, NOW).encode()),
        (b"content-type", b"application/json"),
        (b"content-length", declared),
    )
    request = rawhttp.RawRequest(
        "POST", PATH.encode(), b"job=" + str(uuid.uuid4()).encode(), headers, body
    )
    with rawhttp.LogCapture.installed() as log:
        answer = await rawhttp.send(APP, request)
    assert answer.status < 500 or answer.status == 503, answer.body[:300]
    assert log.tracebacks() == []
