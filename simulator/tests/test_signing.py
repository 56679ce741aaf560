"""The simulator signs as Replicate does: the published Standard Webhooks vectors hold."""

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from jobs_testkit import vectors
from replicate_sim.webhooks import sign

VECTORS = vectors.load("standard-webhooks.json")
VALID = [c for c in VECTORS["cases"] if c["valid"]]


@pytest.mark.parametrize("case", VALID, ids=lambda c: c["name"])
def test_signature_matches_the_reference_vectors(case: dict[str, str]) -> None:
    ours = sign(VECTORS["secret"], case["id"], int(case["timestamp"]), case["body"].encode())
    assert ours in case["signature"].split(" ")


def test_the_reference_library_verifies_what_we_sign_and_rejects_tampering() -> None:
    secret = VECTORS["secret"]
    body = b'{"id":"p1","status":"succeeded"}'
    now = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, "msg_1", now, body),
    }
    assert Webhook(secret).verify(body, headers) == {"id": "p1", "status": "succeeded"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"succeeded", b"failed"), headers)
