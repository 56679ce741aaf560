"""Job tokens: short-lived bearer tokens that read one job for its owner (`POST
/api/jobs/{jobId}/token`), so a page holds one instead of its user's session token. Pure: the
clock is the caller's.

A job token is never a session token, nor the other way round: it is signed with a secret of
its own (`JOB_TOKEN_SECRET`), typed in its header (`typ: job+jwt`, RFC 8725 §3.11) and scoped
in its claims (`scope: job:read`, `job: <jobId>`); each verifier refuses the other's kind even
if an operator gave both the same secret.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jwt

from .tokens import ALGORITHM, DEFAULT_LEEWAY_S, AuthError, Clock

# The header `typ` of a job token, and the claims that scope it to reading one job.
JOB_TOKEN_TYPE: Final = "job+jwt"
JOB_SCOPE: Final = "job:read"
SCOPE_CLAIM: Final = "scope"
JOB_CLAIM: Final = "job"
DEFAULT_JOB_TOKEN_TTL_S: Final = 900.0
# Signature only: `grant_of` checks the claims against the injected clock.
_SIGNATURE_ONLY: Final[Any] = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}


class JobTokenOutOfScope(Exception):
    """A valid job token on a route it does not open (`403`): it reads its job only."""


@dataclass(frozen=True, slots=True)
class IssuedJobToken:
    """A job token and when it stops working (seconds since the epoch, `exp`)."""

    token: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class JobGrant:
    """What a verified job token lets its bearer do: read `job_id`, a job of `user_id`."""

    user_id: str
    job_id: uuid.UUID


def is_job_scoped(claims: Mapping[str, Any]) -> bool:
    """Whether verified `claims` are scoped like a job token's: a session verifier refuses
    them. (`job` alone is not enough: an identity provider's token may carry such a claim.)"""
    return claims.get(SCOPE_CLAIM) == JOB_SCOPE


class JobTokens:
    """Issues job tokens with the first of `secrets` (HS256) and verifies them with any
    (rotation), valid `ttl_s` from issue and `leeway_s` past that (the clock skew between
    gateway replicas)."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        ttl_s: float = DEFAULT_JOB_TOKEN_TTL_S,
        leeway_s: float = DEFAULT_LEEWAY_S,
        clock: Clock = time.time,
    ) -> None:
        if not secrets:
            raise ValueError("job tokens need a secret")
        self._secrets = tuple(secrets)
        self._ttl_s = ttl_s
        self._leeway_s = leeway_s
        self._clock = clock

    def issue(self, user_id: str, job_id: uuid.UUID) -> IssuedJobToken:
        now = self._clock()
        expires_at = int(now + self._ttl_s)
        payload = {
            "sub": user_id,
            JOB_CLAIM: str(job_id),
            SCOPE_CLAIM: JOB_SCOPE,
            "iat": int(now),
            "exp": expires_at,
        }
        with warnings.catch_warnings():
            # A short dev secret is reported at startup, not on every token.
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            token = jwt.encode(
                payload, self._secrets[0], algorithm=ALGORITHM, headers={"typ": JOB_TOKEN_TYPE}
            )
        return IssuedJobToken(token, expires_at)

    def verify(self, token: str) -> JobGrant:
        """The grant of a good job token; raises `AuthError` (`401`) saying why not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("malformed job token") from None
        if header.get("typ") != JOB_TOKEN_TYPE:
            raise AuthError("not a job token")
        for secret in self._secrets:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
                    claims = jwt.decode(
                        token, secret, algorithms=[ALGORITHM], options=_SIGNATURE_ONLY
                    )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError:
                raise AuthError("malformed job token") from None
            return grant_of(claims, self._clock(), self._leeway_s)
        raise AuthError("job token signature does not match")


def grant_of(claims: dict[str, Any], now: float, leeway_s: float) -> JobGrant:
    """The grant of a job token's signature-checked `claims` at `now`; `AuthError` if they are
    not a job token's or it has expired."""
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise AuthError("job token has no exp claim")
    if now >= exp + leeway_s:
        raise AuthError("job token has expired")
    if claims.get(SCOPE_CLAIM) != JOB_SCOPE:
        raise AuthError("job token has no job:read scope")
    sub, job = claims.get("sub"), claims.get(JOB_CLAIM)
    if not isinstance(sub, str) or not sub:
        raise AuthError("job token has no sub claim naming the user")
    try:
        job_id = uuid.UUID(job) if isinstance(job, str) else None
    except ValueError:
        job_id = None
    if job_id is None:
        raise AuthError("job token has no job claim naming its job")
    return JobGrant(sub, job_id)
