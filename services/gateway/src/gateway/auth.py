"""Bearer-token verification: who is calling, from an `Authorization` header and a JWT.

Pure: no I/O and injectable clocks. HS256 tokens are checked against the configured secrets;
RS256/ES256 tokens against the keys of a JWKS (`jwks.py`). PyJWT checks the signature only;
the claims (`exp`, `nbf`, `iss`, `aud`, `sub`) are checked here against the clock, the same way
whichever key signed the token, so tests need no sleeping.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Final

import jwt

from .budgets import DEFAULT_BUDGET_CLAIM, budget_claim_micros
from .job_tokens import JOB_TOKEN_TYPE, JobTokenOutOfScope, JobTokens, is_job_scoped
from .jwks import JWKS_ALGORITHMS, JwksKeys
from .tokens import (
    ALGORITHM,
    DEFAULT_LEEWAY_S,
    DEFAULT_TOKEN_CACHE_S,
    DEFAULT_TOKEN_CACHE_SIZE,
    AuthError,
    Caller,
    Clock,
    VerifiedToken,
    VerifiedTokens,
    bearer_token,
)

log = logging.getLogger(__name__)

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


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TokenVerifier:
    """Verifies JWTs and names their user (`sub`): HS256 signed with any of `secrets`, or
    RS256/ES256 signed with a key of `jwks`; the token header's `alg` chooses which. An HS256
    token that verified is remembered for `cache_s` (see `VerifiedTokens`). The claim named
    `budget_claim`, when a non-negative number, is the caller's monthly budget; any other
    value is ignored with a warning (the token is still good).

    A job token (`job_tokens.py`) is verified by `job_tokens` instead, and only where the route
    reads one job (`job_token=True`): elsewhere a good one is `JobTokenOutOfScope` (`403`)."""

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
        budget_claim: str = DEFAULT_BUDGET_CLAIM,
        job_tokens: JobTokens | None = None,
    ) -> None:
        self._verified = VerifiedTokens(cache_size)
        self._cache_s = cache_s
        self._secrets = tuple(secrets)
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._clock = clock
        self._budget_claim = budget_claim
        self._job_tokens = job_tokens

    @property
    def job_tokens(self) -> JobTokens | None:
        """What issues job tokens; `None`: none are issued or accepted."""
        return self._job_tokens

    async def authenticate(self, authorization: str | None) -> str:
        """The user id of a request's `Authorization` header; raises `AuthError` (or
        `KeysUnavailable`)."""
        return (await self.identify(authorization)).user_id

    async def identify(self, authorization: str | None, *, job_token: bool = False) -> Caller:
        """The caller of a request's `Authorization` header, budget claim included; with
        `job_token`, a job token's caller too (its `job_id` set)."""
        return await self.verify_caller(bearer_token(authorization), job_token=job_token)

    async def verify(self, token: str) -> str:
        """The user id (`sub`) of a valid token; raises `AuthError`, or `KeysUnavailable`
        when its JWKS key cannot be looked up."""
        return (await self.verify_caller(token)).user_id

    async def verify_caller(self, token: str, *, job_token: bool = False) -> Caller:
        """`verify`, with the budget the token's claim names; a job token only with
        `job_token` (see the class)."""
        if not self._secrets and self._jwks is None:
            raise AuthError("no token verification key is configured")
        now = self._clock()
        caller = self._verified.lookup(token, now)
        if caller is not None:
            return caller
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("malformed token") from None
        if header.get("typ") == JOB_TOKEN_TYPE:
            return self._job_caller(token, job_token=job_token)
        alg = header.get("alg")
        if alg == ALGORITHM and self._secrets:
            claims = self._hs256_claims(token)
            caller = self._caller(claims, now)
            expires_at = claims["exp"] + self._leeway_s  # a number: `_check_claims` made sure
            kept = VerifiedToken(
                caller.user_id, expires_at, now + self._cache_s, caller.budget_micros
            )
            self._verified.keep(token, kept)
            return caller
        if alg in JWKS_ALGORITHMS and self._jwks is not None:
            claims = await self._jwks_claims(token, alg, header.get("kid"))
            return self._caller(claims, now)
        raise AuthError(f"token algorithm must be one of {', '.join(self._algorithms())}")

    def _job_caller(self, token: str, *, job_token: bool) -> Caller:
        if self._job_tokens is None:
            raise AuthError("job tokens are not accepted")
        grant = self._job_tokens.verify(token)
        if not job_token:
            raise JobTokenOutOfScope(
                "a job token reads its own job only: GET /api/jobs/{jobId}, /events, /output"
            )
        return Caller(grant.user_id, job_id=grant.job_id)

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

    def _caller(self, claims: Mapping[str, Any], now: float) -> Caller:
        if is_job_scoped(claims):
            # Signed with a session key, yet scoped like a job token: never a session.
            raise AuthError("a job-scoped token is not a session token")
        user_id = self._check_claims(claims, now)
        if self._budget_claim not in claims:
            return Caller(user_id)
        try:
            budget = budget_claim_micros(claims[self._budget_claim])
        except ValueError as exc:
            # The issuer's mistake, not the caller's: the configured budget applies. Once per
            # verification (an HS256 token is verified again after `cache_s`).
            log.warning(
                "token budget claim ignored",
                extra={"claim": self._budget_claim, "reason": str(exc), "user_id": user_id},
            )
            return Caller(user_id)
        return Caller(user_id, budget)

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
