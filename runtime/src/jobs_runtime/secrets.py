"""Secret settings, and the secret values the repository publishes, which prod never accepts.

A settings field typed `Secret`, `HS256Secret` or `SecretURL` is checked by `load_settings`
when `APP_ENV=prod`: none of its comma-separated parts (or a URL's password) may be published
here, and an HS256 key must be at least 32 bytes.
"""

from __future__ import annotations

import typing
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

import msgspec

SecretKind = Literal["plain", "hs256", "url"]

# A token, key or password; comma-separated, each part is one (rotation lists).
Secret = Annotated[str, msgspec.Meta(extra={"secret": "plain"})]
# An HMAC-SHA256 key for JWTs: RFC 7518 asks for at least the hash's size.
HS256Secret = Annotated[str, msgspec.Meta(extra={"secret": "hs256"})]
# A URL whose password (`scheme://user:password@host/...`) is the secret.
SecretURL = Annotated[str, msgspec.Meta(extra={"secret": "url"})]

HS256_MIN_BYTES: Final = 32

# Every secret value that anyone can read in this repository, now or in its history: dev
# defaults, examples in manifests and docs, test fixtures that look real. The repository test
# `runtime/tests/test_published_secrets.py` finds each value assigned to a secret's name in the
# tracked files and fails until it is listed here.
PUBLISHED: Final = frozenset(
    {
        # Dev defaults of the services and the simulator (config.py).
        "dev-only-jwt-secret",
        "dev-only-job-token-secret",
        "dev-only-replicate-token",
        "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQ=",
        "whsec_c2ltdWxhdG9yLWRldi13ZWJob29rLXNlY3JldA==",
        # The dev overlay's literals until it generated its secrets (in the git history).
        "dev-cluster-jwt-secret-change-me",
        "dev-cluster-replicate-token",
        "whsec_ZGV2LWNsdXN0ZXItd2ViaG9vay1zZWNyZXQ=",
        "dev-cluster-password",
        "dev-cluster-nats-gateway",
        "dev-cluster-nats-webhook-ingest",
        "dev-cluster-nats-ai-runner",
        "dev-cluster-nats-job-store",
        # What deploy/tests once stood in for the operator's Secrets with (in the git history).
        "a-long-random-string",
        "r8_operator_token",
        "whsec_b3BlcmF0b3Itc2lnbmluZy1rZXk=",
        "password",
        "operator-nats-password",
        "not-the-real-one",
        # The Standard Webhooks documentation's example key, used by tests here.
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        # Test values: webhook-ingest's fetch-secret key, deploy/tests' malformed simulator key.
        "whsec_ZmV0Y2gtc2VjcmV0IHRlc3Qga2V5",
        "not-whsec",
        # The JavaScript client's offline tests: a job token their local server hands out.
        "job-token",
    }
)


def secret_kind(annotation: object) -> SecretKind | None:
    """The kind a field's type marks it as (through `X | None` too), or None: not a secret."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, msgspec.Meta) and meta.extra and "secret" in meta.extra:
            kind: SecretKind = meta.extra["secret"]
            return kind
    for arg in typing.get_args(annotation):
        if (kind_of_arg := secret_kind(arg)) is not None:
            return kind_of_arg
    return None


def secret_parts(kind: SecretKind, value: str) -> list[str]:
    """The values a setting holds: its comma-separated parts, or a URL's password."""
    if kind == "url":
        try:
            password = urlsplit(value).password
        except ValueError:
            return []  # not a URL: the service's own check names it
        return [password] if password else []
    return [part.strip() for part in value.split(",") if part.strip()]


def refusal(kind: SecretKind, value: str) -> str | None:
    """Why prod refuses this secret (naming the part, never showing it), or None."""
    parts = secret_parts(kind, value)
    for position, part in enumerate(parts, 1):
        where = f"secret {position}" if len(parts) > 1 else "the secret"
        if part in PUBLISHED:
            return f"{where} is published in the repository (a dev default or an example)"
        if kind == "hs256" and len(part.encode()) < HS256_MIN_BYTES:
            return f"{where} is shorter than {HS256_MIN_BYTES} bytes, too weak for HS256"
    return None


def check_secrets(settings: msgspec.Struct) -> tuple[str, str] | None:
    """The first secret field of `settings` that prod refuses: (variable, reason), or None."""
    for field in msgspec.structs.fields(settings):
        kind = secret_kind(field.type)
        value = getattr(settings, field.name)
        if kind is None or not isinstance(value, str):
            continue
        if (reason := refusal(kind, value)) is not None:
            return field.encode_name, reason
    return None
