"""Job tokens: issued for one job of its owner, read back as that grant until they expire
(leeway included), and never taken for a session token nor the other way round."""

import uuid
from typing import Any

import jwt
import pytest

from gateway.auth import TokenVerifier
from gateway.job_tokens import (
    JOB_TOKEN_TYPE,
    JobGrant,
    JobTokenOutOfScope,
    JobTokens,
    grant_of,
    is_job_scoped,
)
from gateway.tokens import AuthError, Caller

NOW = 1_800_000_000.0
JOB_SECRET = "job-token-secret-of-at-least-thirty-two-bytes"
OLD_JOB_SECRET = "older-job-token-secret-at-least-thirty-two-b"
SESSION_SECRET = "session-secret-of-at-least-thirty-two-bytes"
JOB = uuid.UUID("6f1c1c1e-8d3c-4a57-9a53-0c3f1f2a9b10")


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def job_tokens(clock: Clock, *secrets: str, **options: Any) -> JobTokens:
    return JobTokens(secrets or (JOB_SECRET,), clock=clock, **options)


def verifier(clock: Clock, tokens: JobTokens | None) -> TokenVerifier:
    return TokenVerifier([SESSION_SECRET], clock=clock, job_tokens=tokens, leeway_s=30)


def forged(secret: str, *, typ: str | None = JOB_TOKEN_TYPE, **claims: Any) -> str:
    payload = {"sub": "alice", "job": str(JOB), "scope": "job:read", "exp": int(NOW + 60)}
    payload.update(claims)
    headers = {"typ": typ} if typ is not None else None
    body = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(body, secret, algorithm="HS256", headers=headers)


def test_a_token_grants_its_job_to_its_owner_until_it_expires() -> None:
    clock = Clock()
    tokens = job_tokens(clock, ttl_s=900, leeway_s=0)
    issued = tokens.issue("alice", JOB)
    assert issued.expires_at == NOW + 900
    assert jwt.get_unverified_header(issued.token)["typ"] == JOB_TOKEN_TYPE
    assert tokens.verify(issued.token) == JobGrant("alice", JOB)
    clock.now = NOW + 899
    assert tokens.verify(issued.token) == JobGrant("alice", JOB)
    clock.now = NOW + 900
    with pytest.raises(AuthError, match="expired"):
        tokens.verify(issued.token)


def test_the_leeway_extends_a_token_by_that_much_only() -> None:
    clock = Clock()
    tokens = job_tokens(clock, ttl_s=60, leeway_s=30)
    issued = tokens.issue("alice", JOB)
    clock.now = NOW + 89
    assert tokens.verify(issued.token).job_id == JOB
    clock.now = NOW + 90
    with pytest.raises(AuthError, match="expired"):
        tokens.verify(issued.token)


def test_the_first_secret_signs_and_any_verifies() -> None:
    clock = Clock()
    old = job_tokens(clock, OLD_JOB_SECRET).issue("alice", JOB)
    rotated = job_tokens(clock, JOB_SECRET, OLD_JOB_SECRET)
    assert rotated.verify(old.token) == JobGrant("alice", JOB)
    assert job_tokens(clock, JOB_SECRET).verify(rotated.issue("bob", JOB).token).user_id == "bob"
    with pytest.raises(AuthError, match="signature"):
        job_tokens(clock, JOB_SECRET).verify(old.token)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (forged(SESSION_SECRET), "signature"),
        (forged(JOB_SECRET, typ=None), "not a job token"),
        (forged(JOB_SECRET, typ="JWT"), "not a job token"),
        (forged(JOB_SECRET, scope=None), "scope"),
        (forged(JOB_SECRET, scope="job:write"), "scope"),
        (forged(JOB_SECRET, job=None), "job claim"),
        (forged(JOB_SECRET, job="not-a-uuid"), "job claim"),
        (forged(JOB_SECRET, sub=None), "sub"),
        (forged(JOB_SECRET, exp=None), "exp"),
        (forged(JOB_SECRET, exp="soon"), "exp"),
        ("not.a.token", "malformed"),
    ],
)
def test_anything_but_a_whole_job_token_is_refused(token: str, reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        job_tokens(Clock()).verify(token)


def test_claims_are_checked_against_the_clock_and_leeway() -> None:
    claims = {"sub": "alice", "job": str(JOB), "scope": "job:read", "exp": NOW}
    assert grant_of(claims, NOW - 1, 0) == JobGrant("alice", JOB)
    assert grant_of(claims, NOW + 9, 10) == JobGrant("alice", JOB)
    with pytest.raises(AuthError, match="expired"):
        grant_of(claims, NOW, 0)


async def test_a_job_token_is_a_caller_only_where_a_route_reads_one_job() -> None:
    clock = Clock()
    tokens = job_tokens(clock)
    issued = tokens.issue("alice", JOB)
    verify = verifier(clock, tokens)
    assert await verify.verify_caller(issued.token, job_token=True) == Caller("alice", job_id=JOB)
    with pytest.raises(JobTokenOutOfScope):
        await verify.verify_caller(issued.token)
    # Refused before its scope is looked at: a bad job token is a 401 everywhere.
    clock.now = NOW + 10_000
    with pytest.raises(AuthError, match="expired"):
        await verify.verify_caller(issued.token)


async def test_without_job_tokens_configured_none_is_accepted() -> None:
    clock = Clock()
    issued = job_tokens(clock).issue("alice", JOB)
    with pytest.raises(AuthError, match="not accepted"):
        await verifier(clock, None).verify_caller(issued.token, job_token=True)


async def test_a_session_token_is_never_a_job_token_and_the_reverse() -> None:
    clock = Clock()
    tokens = job_tokens(clock)
    verify = verifier(clock, tokens)
    session = jwt.encode({"sub": "alice", "exp": int(NOW + 60)}, SESSION_SECRET, "HS256")
    assert await verify.verify_caller(session, job_token=True) == Caller("alice")
    with pytest.raises(AuthError, match="not a job token"):
        tokens.verify(session)
    # Job-scoped claims under the session key, even without the job header: not a session.
    scoped = forged(SESSION_SECRET, typ=None)
    with pytest.raises(AuthError, match="job-scoped"):
        await verify.verify_caller(scoped)
    # A job token's header with the session key: the job verifier's, which refuses the key.
    with pytest.raises(AuthError, match="signature"):
        await verify.verify_caller(forged(SESSION_SECRET), job_token=True)


def test_only_the_job_scope_marks_claims_as_a_job_tokens() -> None:
    assert is_job_scoped({"scope": "job:read"})
    # An identity provider's claim named `job` (a job title) is no job token.
    assert not is_job_scoped({"job": "engineer", "scope": "openid"})
