"""Standard Webhooks verification of Replicate's calls: headers, timestamp, then signature.

Pure: the raw body, the headers and a clock in, a `VerifiedWebhook` or a `VerificationError` out,
so tests pin time and replay the published signing vectors.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from standardwebhooks.webhooks import Webhook

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"
SIGNED_HEADERS: Final = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)

SECRET_PREFIX: Final = "whsec_"
TOLERANCE: Final = timedelta(minutes=5)

Clock = Callable[[], datetime]
Failure = Literal[
    "missing_headers",
    "malformed_timestamp",
    "timestamp_too_old",
    "timestamp_too_new",
    "bad_signature",
]

# Unix seconds as digits only: the signed text holds the header as sent, and `Webhook.sign`
# writes whole seconds, so a fraction or a sign could never match anyway. Twelve digits keep
# `int` cheap on a hostile value; freshness is checked on the number, before any `datetime`
# exists, since `datetime` ends at the year 9999 (eleven digits already pass it).
_TIMESTAMP: Final = re.compile(r"[0-9]{1,12}")


def system_clock() -> datetime:
    return datetime.now(UTC)


class VerificationError(Exception):
    """The request is not a webhook signed by one of our secrets; `detail` says which check failed
    and never repeats a secret or the body."""

    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure: Failure = failure
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    """The three headers of a request that may be signed: present, and a fresh timestamp."""

    webhook_id: str
    timestamp: datetime
    signature: str


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """A webhook whose body was signed by a holder of one of the configured secrets."""

    webhook_id: str
    timestamp: datetime
    body: bytes


def parse_secrets(raw: str) -> tuple[Webhook, ...]:
    """The signing keys of `REPLICATE_WEBHOOK_SECRET`: `whsec_<base64>`, comma-separated so a new
    secret can be added before the old one is retired. Raises `ValueError` without the value."""
    secrets = [part.strip() for part in raw.split(",") if part.strip()]
    if not secrets:
        raise ValueError("no secret given")
    keys: list[Webhook] = []
    for position, secret in enumerate(secrets, start=1):
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError(f"secret {position} does not start with {SECRET_PREFIX!r}")
        encoded = secret.removeprefix(SECRET_PREFIX)
        try:
            # Validated here because `Webhook` itself skips characters that are not base64,
            # which would turn a mistyped secret into a different key instead of an error.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"secret {position} is not base64 after {SECRET_PREFIX!r}") from None
        if not key:
            raise ValueError(f"secret {position} is empty")
        keys.append(Webhook(key))
    return tuple(keys)


class WebhookVerifier:
    """Checks a request against every configured secret, in the contract's order.

    `standardwebhooks`' own `Webhook.verify` is not used: it reads the wall clock (the vectors'
    timestamps lie in 2021), and malformed signature lists or a non-UTF-8 body make it raise
    `ValueError`, `binascii.Error` or `UnicodeDecodeError` instead of its verification error.
    The signing itself (`Webhook.sign`: HMAC-SHA256 over `id.timestamp.body`) is the library's.
    """

    def __init__(
        self,
        keys: Sequence[Webhook],
        *,
        clock: Clock = system_clock,
        tolerance: timedelta = TOLERANCE,
    ) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = tuple(keys)
        self._clock = clock
        self._tolerance = tolerance

    def check_headers(self, headers: Mapping[str, str]) -> SignedHeaders:
        """The checks that need no body: the signature headers are all there and the timestamp
        is within the tolerance; else `VerificationError`. Run before a body is read, so that
        a request that cannot be signed costs no memory; `verify` runs them again.

        `headers` is looked up by lower-case name (Starlette's headers and plain dicts alike).
        """
        values = {name: headers.get(name, "") for name in SIGNED_HEADERS}
        missing = [name for name, value in values.items() if not value.strip()]
        if missing:
            raise VerificationError("missing_headers", f"missing header(s): {', '.join(missing)}")
        return SignedHeaders(
            webhook_id=values[ID_HEADER],
            timestamp=self._fresh_timestamp(values[TIMESTAMP_HEADER].strip()),
            signature=values[SIGNATURE_HEADER],
        )

    def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedWebhook:
        """The webhook if it is signed, fresh and complete; else `VerificationError`."""
        signed = self.check_headers(headers)
        webhook_id, timestamp = signed.webhook_id, signed.timestamp

        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # Standard Webhooks signs the payload as UTF-8 text; these bytes cannot be that text.
            raise VerificationError(
                "bad_signature", "the body is not UTF-8 text, so no signature can match it"
            ) from None
        offered = _offered_signatures(signed.signature)
        for key in self._keys:
            expected = _signature_bytes(key.sign(webhook_id, timestamp, text))
            # Every offered signature is compared in constant time; a match ends the search,
            # which reveals only that some signature was right.
            if any(hmac.compare_digest(expected, candidate) for candidate in offered):
                return VerifiedWebhook(webhook_id=webhook_id, timestamp=timestamp, body=body)
        raise VerificationError(
            "bad_signature", "no v1 signature matches the body under any configured secret"
        )

    def _fresh_timestamp(self, text: str) -> datetime:
        if not _TIMESTAMP.fullmatch(text):
            raise VerificationError(
                "malformed_timestamp", f"{TIMESTAMP_HEADER} is not whole Unix seconds"
            )
        seconds = int(text)
        now_s = self._clock().timestamp()
        tolerance_s = self._tolerance.total_seconds()
        limit = int(tolerance_s)
        if seconds < now_s - tolerance_s:
            raise VerificationError(
                "timestamp_too_old", f"{TIMESTAMP_HEADER} is more than {limit} s in the past"
            )
        if seconds > now_s + tolerance_s:
            raise VerificationError(
                "timestamp_too_new", f"{TIMESTAMP_HEADER} is more than {limit} s in the future"
            )
        return datetime.fromtimestamp(seconds, UTC)


def _signature_bytes(versioned: str) -> bytes:
    """The digest of a `v1,<base64>` that `Webhook.sign` produced."""
    return base64.b64decode(versioned.partition(",")[2])


def _offered_signatures(header: str) -> list[bytes]:
    """The `v1` digests in a `webhook-signature` header: whitespace-separated `<version>,<base64>`.

    Other versions and entries that are not base64 are skipped rather than refused, so one odd
    entry beside a good signature does not fail the webhook.
    """
    digests: list[bytes] = []
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma:
            continue
        try:
            digests.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return digests
