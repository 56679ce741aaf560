"""The keys of a JWKS (`AUTH_JWKS_URL`) that RS256/ES256 tokens are checked against: parsed
from the document the `JwksSource` port fetches, cached, refetched when stale or when a token
names an unknown key, never more than once per cooldown. No I/O here: the fetch is an adapter."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Final

import jwt

from jobs_runtime.errors import Unavailable

from .ports import JwksFetchError, JwksSource
from .tokens import AuthError, Clock

# What keys from `AUTH_JWKS_URL` may sign; anything else a JWKS holds is ignored.
JWKS_ALGORITHMS: Final = ("RS256", "ES256")
# Cached JWKS keys are refetched once this old (a key the issuer withdrew stops verifying);
# a failed refetch keeps the cached keys in use until the next attempt.
DEFAULT_JWKS_MAX_AGE_S: Final = 600.0
# At most one JWKS fetch per this many seconds: tokens with made-up `kid`s are unauthenticated
# and must not make the gateway hammer the issuer.
DEFAULT_JWKS_COOLDOWN_S: Final = 10.0


class KeysUnavailable(Unavailable):
    """The token's key is not cached and the JWKS endpoint did not answer: not the client's fault,
    so it is answered `503` with `Retry-After` rather than `401` (a `401` would make clients
    drop a good token and log the user out while the issuer is merely unreachable)."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


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
