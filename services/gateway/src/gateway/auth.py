"""Bearer-token verification: who is calling, from an `Authorization` header and a JWT.

Pure: no I/O and injectable clocks. HS256 tokens are checked against the configured secrets;
RS256/ES256 tokens against the keys of a JWKS, which come through the `JwksSource` port (the
HTTP fetch is an adapter) and are cached here by `JwksKeys`. PyJWT checks the signature only;
the claims (`exp`, `nbf`, `iss`, `aud`, `sub`) are checked here against the clock, the same way
whichever key signed the token, so tests need no sleeping.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import jwt

from jobs_runtime.errors import Unavailable

ALGORITHM: Final = "HS256"
# What keys from `AUTH_JWKS_URL` may sign; anything else a JWKS holds is ignored.
JWKS_ALGORITHMS: Final = ("RS256", "ES256")
# Clock skew tolerated between the token issuer and this host.
DEFAULT_LEEWAY_S: Final = 30.0
# Cached JWKS keys are refetched once this old (a key the issuer withdrew stops verifying);
# a failed refetch keeps the cached keys in use until the next attempt.
DEFAULT_JWKS_MAX_AGE_S: Final = 600.0
# At most one JWKS fetch per this many seconds: tokens with made-up `kid`s are unauthenticated
# and must not make the gateway hammer the issuer.
DEFAULT_JWKS_COOLDOWN_S: Final = 10.0
# Verified tokens kept, so a client sending the same token on every request is not parsed and
# signature-checked each time (a fifth of a cached read's CPU). `exp` is still checked on every
# request; an entry is verified afresh after `DEFAULT_TOKEN_CACHE_S`. HS256 tokens only: a JWKS
# key withdrawn must stop its tokens as soon as the JWKS is refetched (`JwksKeys`).
DEFAULT_TOKEN_CACHE_SIZE: Final = 10_000
DEFAULT_TOKEN_CACHE_S: Final = 60.0

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


class KeysUnavailable(Unavailable):
    """The token's key is not cached and the JWKS endpoint did not answer: not the client's fault,
    so it is answered `503` with `Retry-After` rather than `401` (a `401` would make clients
    drop a good token and log the user out while the issuer is merely unreachable)."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class JwksFetchError(Exception):
    """The JWKS document could not be fetched; the message says why."""


class JwksSource(Protocol):
    async def fetch(self) -> bytes:
        """The JWKS document (`{"keys": [...]}`) as served; raise `JwksFetchError` otherwise.
        Must not block the event loop."""


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


def parse_jwks(document: bytes) -> dict[str, jwt.PyJWK]:
    """The RS256/ES256 signing keys of a JWKS document by `kid`; other keys (encryption keys,
    other algorithms, keys without a `kid`) are left out. Raises `JwksFetchError` for a
    document that is not a JWKS or holds no usable key."""
    try:
        data = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        raise JwksFetchError("the JWKS is not JSON") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise JwksFetchError("the JWKS has no keys list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if key.algorithm_name in JWKS_ALGORITHMS:
            keys[kid] = key
    if not keys:
        raise JwksFetchError("the JWKS holds no RS256/ES256 signing key")
    return keys


class JwksKeys:
    """The keys of a JWKS by `kid`, fetched through `source` when first needed and cached.

    An unknown `kid` triggers one refetch (a rotated-in key), then is refused; refetches are
    at most one per `cooldown_s` and concurrent requests share one. A failed fetch keeps the
    cached keys; only a token whose key is not among them gets `KeysUnavailable`.
    """

    def __init__(
        self,
        source: JwksSource,
        *,
        max_age_s: float = DEFAULT_JWKS_MAX_AGE_S,
        cooldown_s: float = DEFAULT_JWKS_COOLDOWN_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self._source = source
        self._max_age_s = max_age_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._attempts = 0
        self._failure: str | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key named `kid`; `AuthError` if the JWKS has none, `KeysUnavailable` if the
        JWKS cannot be fetched and the key is not cached."""
        if kid not in self._keys or self._is_stale():
            await self._refresh()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._failure is not None:
            raise KeysUnavailable(self._failure, self._retry_after_s())
        raise AuthError("token key id is not in the JWKS")

    def _is_stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age_s

    def _cooling_down(self) -> bool:
        return (
            self._attempted_at is not None and self._clock() - self._attempted_at < self._cooldown_s
        )

    def _retry_after_s(self) -> int:
        elapsed = 0.0 if self._attempted_at is None else self._clock() - self._attempted_at
        return max(1, math.ceil(self._cooldown_s - elapsed))

    async def _refresh(self) -> None:
        attempts = self._attempts
        # Taken even when no fetch is due: a request arriving during a fetch waits for it.
        async with self._lock:
            if self._attempts != attempts or self._cooling_down():
                return  # another request fetched while this one waited: use its answer
            self._attempts += 1
            self._attempted_at = self._clock()
            try:
                keys = parse_jwks(await self._source.fetch())
            except JwksFetchError as exc:
                self._failure = f"the JWKS cannot be fetched: {exc}"
                return
            self._keys = keys
            self._fetched_at = self._clock()
            self._failure = None


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified token still needs checking on each use: its expiry (`exp`, leeway
    included) against the clock, and how long it may be used without verifying it again."""

    user_id: str
    expires_at: float
    reverify_at: float


class VerifiedTokens:
    """Tokens that passed every check, by their exact text, bounded at `max_size` (oldest
    verified first out). Only a token that verified is kept, so a caller can never get in
    with a token it could not get in with before; `lookup` refuses an expired one."""

    def __init__(self, max_size: int = DEFAULT_TOKEN_CACHE_SIZE) -> None:
        self._max_size = max_size
        self._tokens: dict[str, VerifiedToken] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def lookup(self, token: str, now: float) -> str | None:
        """The user of a kept token still to be trusted at `now`; `None`: verify it (again).
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
        return kept.user_id

    def keep(self, token: str, verified: VerifiedToken) -> None:
        if self._max_size <= 0:
            return
        if token not in self._tokens and len(self._tokens) >= self._max_size:
            del self._tokens[next(iter(self._tokens))]
        self._tokens[token] = verified


class TokenVerifier:
    """Verifies JWTs and names their user (`sub`): HS256 signed with any of `secrets`, or
    RS256/ES256 signed with a key of `jwks`; the token header's `alg` chooses which. An HS256
    token that verified is remembered for `cache_s` (see `VerifiedTokens`)."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        jwks: JwksKeys | None = None,
        issuer: str = "",
        audience: str = "",
        leeway_s: float = DEFAULT_LEEWAY_S,
        clock: Clock = time.time,
        cache_size: int = DEFAULT_TOKEN_CACHE_SIZE,
        cache_s: float = DEFAULT_TOKEN_CACHE_S,
    ) -> None:
        self._verified = VerifiedTokens(cache_size)
        self._cache_s = cache_s
        self._secrets = tuple(secrets)
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._clock = clock

    async def authenticate(self, authorization: str | None) -> str:
        """The user id of a request's `Authorization` header; raises `AuthError` (or
        `KeysUnavailable`)."""
        return await self.verify(bearer_token(authorization))

    async def verify(self, token: str) -> str:
        """The user id (`sub`) of a valid token; raises `AuthError`, or `KeysUnavailable`
        when its JWKS key cannot be looked up."""
        if not self._secrets and self._jwks is None:
            raise AuthError("no token verification key is configured")
        now = self._clock()
        user_id = self._verified.lookup(token, now)
        if user_id is not None:
            return user_id
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if alg == ALGORITHM and self._secrets:
            claims = self._hs256_claims(token)
            user_id = self._check_claims(claims, now)
            expires_at = claims["exp"] + self._leeway_s  # a number: `_check_claims` made sure
            self._verified.keep(token, VerifiedToken(user_id, expires_at, now + self._cache_s))
            return user_id
        if alg in JWKS_ALGORITHMS and self._jwks is not None:
            claims = await self._jwks_claims(token, alg, header.get("kid"))
            return self._check_claims(claims, now)
        raise AuthError(f"token algorithm must be one of {', '.join(self._algorithms())}")

    def _algorithms(self) -> tuple[str, ...]:
        return ((ALGORITHM,) if self._secrets else ()) + (
            JWKS_ALGORITHMS if self._jwks is not None else ()
        )

    def _hs256_claims(self, token: str) -> dict[str, Any]:
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

    async def _jwks_claims(self, token: str, alg: str, kid: object) -> dict[str, Any]:
        assert self._jwks is not None
        if not isinstance(kid, str) or not kid:
            raise AuthError("token has no kid naming its key")
        key = await self._jwks.key(kid)
        if key.algorithm_name != alg:
            raise AuthError("token algorithm does not match its key")
        try:
            return jwt.decode(token, key, algorithms=[alg], options=_SIGNATURE_ONLY)
        except jwt.InvalidSignatureError:
            raise AuthError("token signature does not match") from None
        except jwt.InvalidTokenError:
            raise AuthError("malformed token") from None

    def _check_claims(self, claims: Mapping[str, Any], now: float) -> str:
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
