"""Token verification: HS256 with rotation, `exp` required, `iss`/`aud` only when configured,
`sub` as the user id; every refusal explains itself without repeating the token."""

from typing import Any

import jwt
import pytest

from gateway.auth import TokenVerifier
from gateway.tokens import (
    AuthError,
    Caller,
    VerifiedToken,
    VerifiedTokens,
    bearer_token,
    issue_token,
)

NOW = 1_800_000_000.0
OLD_SECRET = "old-secret-of-at-least-thirty-two-bytes"
NEW_SECRET = "new-secret-of-at-least-thirty-two-bytes"


def token(secret: str = OLD_SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": "alice", "exp": NOW + 600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm)


def verifier(*secrets: str, **options: Any) -> TokenVerifier:
    return TokenVerifier(secrets or (OLD_SECRET,), clock=lambda: NOW, **options)


async def refusal(verify: TokenVerifier, value: str) -> str:
    with pytest.raises(AuthError) as refused:
        await verify.verify(value)
    assert value not in str(refused.value)
    return str(refused.value)


async def test_a_good_token_names_its_user() -> None:
    assert await verifier().verify(token()) == "alice"
    assert await verifier().authenticate(f"Bearer {token()}") == "alice"


async def test_an_expired_token_is_refused_past_the_leeway_only() -> None:
    assert "expired" in await refusal(verifier(), token(exp=NOW - 31))
    # A little clock skew between issuer and gateway is tolerated.
    assert await verifier().verify(token(exp=NOW - 5)) == "alice"
    assert "expired" in await refusal(verifier(leeway_s=0), token(exp=NOW - 5))


async def test_a_token_without_exp_is_refused() -> None:
    assert "exp" in await refusal(verifier(), token(exp=None))
    assert "exp" in await refusal(verifier(), token(exp="tomorrow"))


async def test_a_token_signed_with_another_secret_is_refused() -> None:
    assert "signature" in await refusal(verifier(), token(secret=NEW_SECRET))


async def test_any_of_several_secrets_verifies_during_rotation() -> None:
    both = verifier(NEW_SECRET, OLD_SECRET)
    assert await both.verify(token(secret=OLD_SECRET)) == "alice"
    assert await both.verify(token(secret=NEW_SECRET)) == "alice"
    assert "signature" in await refusal(both, token(secret="third-secret-of-thirty-two-bytes-x"))


async def test_only_hs256_is_accepted() -> None:
    # The algorithm is refused before any signature is checked (64 bytes: HS512's minimum).
    assert "HS256" in await refusal(verifier(), token(secret=OLD_SECRET * 2, algorithm="HS512"))
    unsigned = jwt.encode({"sub": "alice", "exp": NOW + 600}, "", algorithm="none")
    assert "HS256" in await refusal(verifier(), unsigned)


async def test_issuer_is_checked_only_when_configured() -> None:
    assert await verifier().verify(token(iss="someone")) == "alice"
    strict = verifier(issuer="https://id.example")
    assert await strict.verify(token(iss="https://id.example")) == "alice"
    assert "issuer" in await refusal(strict, token(iss="https://evil.example"))
    assert "issuer" in await refusal(strict, token())


async def test_audience_is_checked_only_when_configured() -> None:
    # PyJWT would refuse any `aud` without a configured audience; the contract does not.
    assert await verifier().verify(token(aud="somebody-else")) == "alice"
    strict = verifier(audience="ai-jobs")
    assert await strict.verify(token(aud="ai-jobs")) == "alice"
    assert await strict.verify(token(aud=["web", "ai-jobs"])) == "alice"
    assert "audience" in await refusal(strict, token(aud="web"))
    assert "audience" in await refusal(strict, token())


async def test_the_user_is_a_non_empty_sub() -> None:
    assert "sub" in await refusal(verifier(), token(sub=None))
    assert "sub" in await refusal(verifier(), token(sub=""))


async def test_a_token_not_yet_valid_is_refused() -> None:
    assert "not valid yet" in await refusal(verifier(), token(nbf=NOW + 120))
    assert await verifier().verify(token(nbf=NOW - 1)) == "alice"


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic YWxpY2U6cGFzcw==", "Bearer", "Bearer ", "Bearer a b", "Token abc"],
)
def test_only_a_bearer_header_carries_a_token(header: str | None) -> None:
    with pytest.raises(AuthError):
        bearer_token(header)


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


async def test_garbage_is_a_malformed_token() -> None:
    assert "malformed" in await refusal(verifier(), "not-a-jwt")


async def test_without_any_secret_every_token_is_refused() -> None:
    assert "key" in await refusal(TokenVerifier((), clock=lambda: NOW), token())


async def test_issued_dev_tokens_pass_the_same_checks() -> None:
    strict = verifier(issuer="iss", audience="aud")
    issued = issue_token(
        OLD_SECRET, subject="dev-user", ttl_s=60, now=NOW, issuer="iss", audience="aud"
    )
    assert await strict.verify(issued) == "dev-user"
    assert "expired" in await refusal(
        strict, issue_token(OLD_SECRET, subject="u", ttl_s=60, now=NOW - 120)
    )


# --- the cache of verified tokens ------------------------------------------------------------


async def test_a_kept_token_is_refused_once_it_expires() -> None:
    now = [NOW]
    verify = TokenVerifier((OLD_SECRET,), clock=lambda: now[0], leeway_s=0, cache_s=3600)
    good = token(exp=NOW + 10)
    assert await verify.verify(good) == "alice"
    now[0] = NOW + 9
    assert await verify.verify(good) == "alice"
    now[0] = NOW + 10
    assert "expired" in await refusal(verify, good)
    # And for good: the refusal does not depend on the token still being kept.
    assert "expired" in await refusal(verify, good)


async def test_a_kept_token_is_verified_again_after_cache_s() -> None:
    now = [NOW]
    verify = TokenVerifier((OLD_SECRET,), clock=lambda: now[0], cache_s=5)
    good = token()
    assert await verify.verify(good) == "alice"
    now[0] = NOW + 6
    # Verified afresh (the claims are read again, not taken from the cache): still good.
    assert await verify.verify(good) == "alice"


async def test_refused_tokens_are_never_kept() -> None:
    verify = verifier()
    bad = token(secret=NEW_SECRET)
    for _ in range(2):
        assert "signature" in await refusal(verify, bad)
    assert len(verify._verified) == 0


def test_the_cache_is_bounded_oldest_first_out() -> None:
    kept = VerifiedTokens(max_size=2)
    for name in ("a", "b", "c"):
        kept.keep(name, VerifiedToken(name, expires_at=NOW + 60, reverify_at=NOW + 60))
    assert len(kept) == 2
    assert kept.lookup("a", NOW) is None
    assert kept.lookup("c", NOW) == Caller("c")
    with pytest.raises(AuthError):
        kept.lookup("b", NOW + 60)
    assert kept.lookup("b", NOW) is None
