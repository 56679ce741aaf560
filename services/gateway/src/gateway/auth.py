"""Bearer-token verification: who is calling, from an `Authorization` header and a JWT.

Pure: no I/O and an injectable clock. PyJWT checks the HS256 signature; the claims (`exp`,
`nbf`, `iss`, `aud`, `sub`) are checked here against that clock, so tests need no sleeping.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import jwt

ALGORITHM: Final = "HS256"
# Clock skew tolerated between the token issuer and this host.
DEFAULT_LEEWAY_S: Final = 30.0
# Below this, HS256 secrets are guessable (RFC 7518 §3.2); PyJWT warns on each use instead.
MIN_SECRET_BYTES: Final = 32

Clock = Callable[[], float]

# Signature only: the claims are checked in `_check_claims` against the injected clock.
_SIGNATURE_ONLY: Final[Any] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


class AuthError(Exception):
    """A missing or unacceptable token; the message says why and never contains the token."""


def short_secrets(secrets: Sequence[str]) -> list[int]:
    """Positions (1-based) of secrets shorter than HS256 should use, for a startup warning."""
    return [i for i, s in enumerate(secrets, 1) if len(s.encode()) < MIN_SECRET_BYTES]


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


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TokenVerifier:
    """Verifies HS256 JWTs signed with any of `secrets` and names their user (`sub`)."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        issuer: str = "",
        audience: str = "",
        leeway_s: float = DEFAULT_LEEWAY_S,
        clock: Clock = time.time,
    ) -> None:
        self._secrets = tuple(secrets)
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._clock = clock

    def authenticate(self, authorization: str | None) -> str:
        """The user id of a request's `Authorization` header; raises `AuthError`."""
        return self.verify(bearer_token(authorization))

    def verify(self, token: str) -> str:
        """The user id (`sub`) of a valid token; raises `AuthError`."""
        if not self._secrets:
            raise AuthError("no token verification key is configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise AuthError(f"token algorithm must be {ALGORITHM}")
        claims = self._signed_claims(token)
        return self._check_claims(claims)

    def _signed_claims(self, token: str) -> dict[str, Any]:
        # Rotation: any configured secret may have signed it; a wrong one only fails the
        # signature, so every other failure is final at the first secret.
        for secret in self._secrets:
            try:
                with warnings.catch_warnings():
                    # Short secrets are reported once at startup, not on every request.
                    warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
                    return jwt.decode(
                        token, secret, algorithms=[ALGORITHM], options=_SIGNATURE_ONLY
                    )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError:
                raise AuthError("malformed token") from None
        raise AuthError("token signature does not match")

    def _check_claims(self, claims: Mapping[str, Any]) -> str:
        now = self._clock()
        exp = claims.get("exp")
        if exp is None:
            raise AuthError("token has no exp claim")
        if not _is_number(exp):
            raise AuthError("token exp claim is not a number")
        if now >= exp + self._leeway_s:
            raise AuthError("token has expired")
        nbf = claims.get("nbf")
        if nbf is not None and (not _is_number(nbf) or now + self._leeway_s < nbf):
            raise AuthError("token is not valid yet")
        if self._issuer and claims.get("iss") != self._issuer:
            raise AuthError("token issuer is not accepted")
        if self._audience and not self._audience_matches(claims.get("aud")):
            raise AuthError("token audience is not accepted")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("token has no sub claim naming the user")
        return sub

    def _audience_matches(self, aud: object) -> bool:
        if isinstance(aud, str):
            return aud == self._audience
        if isinstance(aud, list):
            return self._audience in aud
        return False


def issue_token(
    secret: str,
    *,
    subject: str,
    ttl_s: float,
    now: float,
    issuer: str = "",
    audience: str = "",
) -> str:
    """An HS256 token the gateway configured with `secret` (and `issuer`/`audience`) accepts."""
    claims: dict[str, Any] = {"sub": subject, "iat": int(now), "exp": int(now + ttl_s)}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=ALGORITHM)
