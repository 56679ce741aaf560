"""Signature verification against the published Standard Webhooks vectors, with a pinned clock."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from jobs_testkit import vectors
from webhook_ingest.verify import (
    TOLERANCE,
    VerificationError,
    WebhookVerifier,
    parse_secrets,
)

VECTORS: dict[str, Any] = vectors.load("standard-webhooks.json")
SECRET: str = VECTORS["secret"]
OTHER_SECRET = "whsec_" + base64.b64encode(b"another account's secret").decode()
CASES: list[dict[str, Any]] = VECTORS["cases"]
PREDICTION_CASE = next(c for c in CASES if c["name"] == "a prediction body")
SIGNED_AT = datetime.fromtimestamp(int(PREDICTION_CASE["timestamp"]), UTC)


def verifier(*secrets: str, now: datetime = SIGNED_AT) -> WebhookVerifier:
    return WebhookVerifier(parse_secrets(",".join(secrets or (SECRET,))), clock=lambda: now)


def headers(case: dict[str, Any], **changes: str) -> dict[str, str]:
    base = {
        "webhook-id": case["id"],
        "webhook-timestamp": case["timestamp"],
        "webhook-signature": case["signature"],
    }
    return {**base, **changes}


def failure(v: WebhookVerifier, hdrs: dict[str, str], body: bytes) -> str:
    with pytest.raises(VerificationError) as caught:
        v.verify(hdrs, body)
    return caught.value.failure


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_published_vectors(case: dict[str, Any]) -> None:
    v = verifier(now=datetime.fromtimestamp(int(case["timestamp"]), UTC))
    body = case["body"].encode()
    if case["valid"]:
        verified = v.verify(headers(case), body)
        assert verified.webhook_id == case["id"]
        assert verified.body == body
        assert int(verified.timestamp.timestamp()) == int(case["timestamp"])
    else:
        assert failure(v, headers(case), body) == "bad_signature"


def test_the_vectors_need_the_pinned_clock() -> None:
    body = PREDICTION_CASE["body"].encode()
    v = verifier(now=datetime.now(UTC))
    assert failure(v, headers(PREDICTION_CASE), body) == "timestamp_too_old"


GOOD_SIGNATURE: str = PREDICTION_CASE["signature"]
FLIPPED = GOOD_SIGNATURE[:-2] + ("A" if GOOD_SIGNATURE[-2] != "A" else "B") + "="
TAMPERED: dict[str, tuple[dict[str, str], bytes]] = {
    "body": ({}, PREDICTION_CASE["body"].replace("Alice", "Alicf").encode()),
    "body with a byte added": ({}, PREDICTION_CASE["body"].encode() + b" "),
    "id": ({"webhook-id": PREDICTION_CASE["id"] + "x"}, PREDICTION_CASE["body"].encode()),
    "timestamp": (
        {"webhook-timestamp": str(int(PREDICTION_CASE["timestamp"]) - 1)},
        PREDICTION_CASE["body"].encode(),
    ),
    "signature": ({"webhook-signature": FLIPPED}, PREDICTION_CASE["body"].encode()),
    "signature version": (
        {"webhook-signature": "v2," + GOOD_SIGNATURE[3:]},
        PREDICTION_CASE["body"].encode(),
    ),
    "signature truncated": (
        {"webhook-signature": GOOD_SIGNATURE[:20]},
        PREDICTION_CASE["body"].encode(),
    ),
}


@pytest.mark.parametrize("name", TAMPERED)
def test_tampered_prediction_is_refused(name: str) -> None:
    changes, body = TAMPERED[name]
    assert failure(verifier(), headers(PREDICTION_CASE, **changes), body) == "bad_signature"


def test_the_right_secret_may_come_second() -> None:
    body = PREDICTION_CASE["body"].encode()
    assert verifier(OTHER_SECRET, SECRET).verify(headers(PREDICTION_CASE), body)
    assert verifier(SECRET, OTHER_SECRET).verify(headers(PREDICTION_CASE), body)
    assert failure(verifier(OTHER_SECRET), headers(PREDICTION_CASE), body) == "bad_signature"


@pytest.mark.parametrize(
    "signature_header",
    [
        "v1,AAAA {good}",
        "{good}   v1,AAAA",
        "v1,bm90IGl0 \t {good}",
        "garbage v1, v1,!!! v1,a,b v2,{digest} {good}",
        "v1a,{digest} {good}",
    ],
)
def test_whitespace_separated_signatures_any_may_match(signature_header: str) -> None:
    good = PREDICTION_CASE["signature"]
    value = signature_header.format(good=good, digest=good.partition(",")[2])
    hdrs = headers(PREDICTION_CASE, **{"webhook-signature": value})
    assert verifier().verify(hdrs, PREDICTION_CASE["body"].encode())


@pytest.mark.parametrize(
    "signature_header", ["garbage", "v1,", "v1,a,b", ",,,", "v1,abc", "v1,a  v1,b", "v2,AAAA"]
)
def test_malformed_signatures_are_a_bad_signature_not_a_crash(signature_header: str) -> None:
    hdrs = headers(PREDICTION_CASE, **{"webhook-signature": signature_header})
    assert failure(verifier(), hdrs, PREDICTION_CASE["body"].encode()) == "bad_signature"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_named(missing: str) -> None:
    hdrs = headers(PREDICTION_CASE)
    del hdrs[missing]
    with pytest.raises(VerificationError) as caught:
        verifier().verify(hdrs, PREDICTION_CASE["body"].encode())
    assert caught.value.failure == "missing_headers"
    assert missing in caught.value.detail


def test_empty_headers_count_as_missing() -> None:
    hdrs = headers(PREDICTION_CASE, **{"webhook-id": "", "webhook-signature": "  "})
    with pytest.raises(VerificationError) as caught:
        verifier().verify(hdrs, b"{}")
    assert caught.value.failure == "missing_headers"
    assert "webhook-id" in caught.value.detail
    assert "webhook-signature" in caught.value.detail
    assert "webhook-timestamp" not in caught.value.detail


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (TOLERANCE, None),
        (TOLERANCE + timedelta(seconds=1), "timestamp_too_old"),
        (-TOLERANCE, None),
        (-TOLERANCE - timedelta(seconds=1), "timestamp_too_new"),
    ],
)
def test_timestamp_tolerance_is_five_minutes_either_way(
    offset: timedelta, expected: str | None
) -> None:
    v = verifier(now=SIGNED_AT + offset)
    body = PREDICTION_CASE["body"].encode()
    if expected is None:
        assert v.verify(headers(PREDICTION_CASE), body)
    else:
        assert failure(v, headers(PREDICTION_CASE), body) == expected


def test_timestamp_and_signature_failures_have_distinct_details() -> None:
    body = PREDICTION_CASE["body"].encode()
    details = set()
    for v, hdrs in [
        (verifier(now=SIGNED_AT + timedelta(hours=1)), headers(PREDICTION_CASE)),
        (verifier(now=SIGNED_AT - timedelta(hours=1)), headers(PREDICTION_CASE)),
        (verifier(), headers(PREDICTION_CASE, **{"webhook-signature": "v1,AAAA"})),
    ]:
        with pytest.raises(VerificationError) as caught:
            v.verify(hdrs, body)
        details.add(caught.value.detail)
    assert len(details) == 3


@pytest.mark.parametrize("timestamp", ["soon", "1614265330.5", "-1614265330", "1" * 13, "0x10"])
def test_malformed_timestamp(timestamp: str) -> None:
    hdrs = headers(PREDICTION_CASE, **{"webhook-timestamp": timestamp})
    assert failure(verifier(), hdrs, PREDICTION_CASE["body"].encode()) == "malformed_timestamp"


@pytest.mark.parametrize("timestamp", ["253402300800", "999999999999", "0", "000000000000"])
def test_timestamps_beyond_datetimes_range_are_refused_not_a_crash(timestamp: str) -> None:
    # `datetime` ends at the year 9999; twelve digits go far past it.
    hdrs = headers(PREDICTION_CASE, **{"webhook-timestamp": timestamp})
    expected = "timestamp_too_old" if int(timestamp) == 0 else "timestamp_too_new"
    assert failure(verifier(), hdrs, PREDICTION_CASE["body"].encode()) == expected


def test_checks_run_in_the_contracts_order() -> None:
    stale = verifier(now=SIGNED_AT + timedelta(hours=1))
    unsigned_stale = headers(PREDICTION_CASE, **{"webhook-signature": "v1,AAAA"})
    assert failure(stale, unsigned_stale, b"garbage") == "timestamp_too_old"
    no_id = {k: v for k, v in unsigned_stale.items() if k != "webhook-id"}
    assert failure(stale, no_id, b"garbage") == "missing_headers"


def test_a_body_that_is_not_utf8_cannot_be_signed() -> None:
    hdrs = headers(PREDICTION_CASE)
    assert failure(verifier(), hdrs, b"\xff\xfe" + PREDICTION_CASE["body"].encode()) == (
        "bad_signature"
    )


def test_agrees_with_the_library_on_a_fresh_webhook() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    body = '{"id": "p1", "status": "succeeded", "output": ["é", "✓"]}'
    signature = Webhook(SECRET).sign("msg_fresh", now, body)
    hdrs = {
        "webhook-id": "msg_fresh",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    Webhook(SECRET).verify(body.encode(), hdrs)  # the reference implementation accepts it
    assert verifier(now=now).verify(hdrs, body.encode()).webhook_id == "msg_fresh"


@given(
    webhook_id=st.text(max_size=40),
    timestamp=st.text(max_size=20),
    signature=st.text(max_size=200),
    body=st.binary(max_size=200),
)
def test_unsigned_input_only_ever_fails_verification(
    webhook_id: str, timestamp: str, signature: str, body: bytes
) -> None:
    hdrs = {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
    }
    with pytest.raises(VerificationError):
        verifier().verify(hdrs, body)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "no secret"),
        (" , ", "no secret"),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "secret 1 does not start"),
        (f"{SECRET},whsec_not*base64", "secret 2 is not base64"),
        (f"{SECRET},whsec_", "secret 2 is empty"),
    ],
)
def test_bad_secret_settings_are_named_without_their_value(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_secrets(raw)
    assert "LaLaSw" not in str(caught.value)


def test_secrets_are_comma_separated_with_spaces_allowed() -> None:
    assert len(parse_secrets(f" {OTHER_SECRET} , {SECRET},")) == 2
