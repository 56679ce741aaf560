"""Bearer tokens: the `Authorization` header's token, the tokens already verified (kept so a
client sending the same token on every request is not checked each time), and `issue_token`
for `gateway dev-token`. Pure: the clock is the caller's."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt

ALGORITHM: Final = "HS256"
# Clock skew tolerated between the token issuer and this host.
DEFAULT_LEEWAY_S: Final = 30.0
# Verified tokens kept, so a client sending the same token on every request is not parsed and
# signature-checked each time (a fifth of a cached read's CPU). `exp` is still checked on every
# request; an entry is verified afresh after `DEFAULT_TOKEN_CACHE_S`. HS256 tokens only: a JWKS
# key withdrawn must stop its tokens as soon as the JWKS is refetched (`JwksKeys`).
DEFAULT_TOKEN_CACHE_SIZE: Final = 10_000
DEFAULT_TOKEN_CACHE_S: Final = 60.0

Clock = Callable[[], float]


class AuthError(Exception):
    """A missing or unacceptable token; the message says why and never contains the token."""


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        raise AuthError("missing Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise AuthError("Authorization is not a Bearer token")
    if not token or " " in token:
        raise AuthError("malformed Bearer token")
    return token


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a verified token speaks for: the user (`sub`), and the monthly budget its budget
    claim names in micro-dollars (`None`: no usable claim, the configured budget applies);
    for a job token, the one job it may read (`None`: a session, all the user's jobs)."""

    user_id: str
    budget_micros: int | None = None
    job_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified token still needs checking on each use: its expiry (`exp`, leeway
    included) against the clock, and how long it may be used without verifying it again."""

    user_id: str
    expires_at: float
    reverify_at: float
    budget_micros: int | None = None


class VerifiedTokens:
    """Tokens that passed every check, by their exact text, bounded at `max_size` (oldest
    verified first out). Only a token that verified is kept, so a caller can never get in
    with a token it could not get in with before; `lookup` refuses an expired one."""

    def __init__(self, max_size: int = DEFAULT_TOKEN_CACHE_SIZE) -> None:
        self._max_size = max_size
        self._tokens: dict[str, VerifiedToken] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def lookup(self, token: str, now: float) -> Caller | None:
        """The caller of a kept token still to be trusted at `now`; `None`: verify it (again).
        Raises `AuthError` for a kept token that has expired since."""
        kept = self._tokens.get(token)
        if kept is None:
            return None
        if now >= kept.expires_at:
            del self._tokens[token]
            raise AuthError("token has expired")
        if now >= kept.reverify_at:
            del self._tokens[token]
            return None
        return Caller(kept.user_id, kept.budget_micros)

    def keep(self, token: str, verified: VerifiedToken) -> None:
        if self._max_size <= 0:
            return
        if token not in self._tokens and len(self._tokens) >= self._max_size:
            del self._tokens[next(iter(self._tokens))]
        self._tokens[token] = verified


def issue_token(
    secret: str,
    *,
    subject: str,
    ttl_s: float,
    now: float,
    issuer: str = "",
    audience: str = "",
    claims: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 token the gateway configured with `secret` (and `issuer`/`audience`) accepts,
    with `claims` besides (a budget claim)."""
    payload: dict[str, Any] = {
        **(claims or {}),
        "sub": subject,
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    if issuer:
        payload["iss"] = issuer
    if audience:
        payload["aud"] = audience
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=ALGORITHM)
