"""RS256/ES256 tokens verified with keys from a JWKS (a fake source, keys made here): the
keys are cached, an unknown `kid` refetches once, a JWKS that cannot be fetched is
`KeysUnavailable` (503) only for keys not cached, and the claim rules are the HS256 ones."""

import asyncio
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import TokenVerifier
from gateway.jwks import JwksKeys, KeysUnavailable, parse_jwks
from gateway.ports import JwksFetchError
from gateway.tokens import AuthError

from ..fakes import FakeJwksSource, Ticks

NOW = 1_800_000_000.0
SECRET = "hs256-secret-of-at-least-thirty-two-bytes"
COOLDOWN_S = 10.0
MAX_AGE_S = 600.0

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
NEVER_SERVED = ec.generate_private_key(ec.SECP256R1())

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def jwk(key: PrivateKey, kid: str, **extra: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        entry = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        entry = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**entry, "kid": kid, **extra}


def jwks(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


def signed(key: PrivateKey, kid: str | None, alg: str | None = None, **claims: Any) -> str:
    alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
    payload: dict[str, Any] = {"sub": "alice", "exp": NOW + 600, **claims}
    headers = {"kid": kid} if kid is not None else None
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


SERVED = jwks(jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1"))


def setup(
    document: bytes = SERVED, secrets: tuple[str, ...] = (), **options: Any
) -> tuple[TokenVerifier, FakeJwksSource, Ticks]:
    source, clock = FakeJwksSource(document), Ticks(0.0)
    keys = JwksKeys(source, max_age_s=MAX_AGE_S, cooldown_s=COOLDOWN_S, clock=clock)
    return TokenVerifier(secrets, jwks=keys, clock=lambda: NOW, **options), source, clock


async def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as refused:
        await verifier.verify(token)
    assert token not in str(refused.value)
    return str(refused.value)


async def test_rs256_and_es256_tokens_of_served_keys_name_their_user() -> None:
    verifier, source, _ = setup()
    assert await verifier.verify(signed(RSA_KEY, "rsa-1")) == "alice"
    assert await verifier.verify(signed(EC_KEY, "ec-1", sub="bob")) == "bob"
    assert await verifier.authenticate(f"Bearer {signed(EC_KEY, 'ec-1')}") == "alice"
    assert source.fetches == 1  # fetched on first use, then cached


async def test_a_rotated_in_kid_is_fetched_once_then_cached() -> None:
    verifier, source, clock = setup()
    assert await verifier.verify(signed(RSA_KEY, "rsa-1")) == "alice"
    source.document = jwks(jwk(RSA_KEY, "rsa-1"), jwk(RSA_KEY_2, "rsa-2"))
    clock.now += COOLDOWN_S
    assert await verifier.verify(signed(RSA_KEY_2, "rsa-2")) == "alice"
    assert await verifier.verify(signed(RSA_KEY_2, "rsa-2")) == "alice"
    assert await verifier.verify(signed(RSA_KEY, "rsa-1")) == "alice"
    assert source.fetches == 2


async def test_an_unknown_kid_is_refused_after_one_refetch_then_without_fetching() -> None:
    verifier, source, clock = setup()
    await verifier.verify(signed(RSA_KEY, "rsa-1"))
    clock.now += COOLDOWN_S
    assert "key id" in await refusal(verifier, signed(NEVER_SERVED, "made-up"))
    assert source.fetches == 2
    # Made-up kids cannot make the gateway hammer the issuer: one fetch per cooldown.
    for n in range(5):
        assert "key id" in await refusal(verifier, signed(NEVER_SERVED, f"made-up-{n}"))
    assert source.fetches == 2
    clock.now += COOLDOWN_S
    assert "key id" in await refusal(verifier, signed(NEVER_SERVED, "made-up"))
    assert source.fetches == 3


async def test_a_key_never_served_does_not_verify_under_a_served_kid() -> None:
    verifier, _, _ = setup()
    assert "signature" in await refusal(verifier, signed(NEVER_SERVED, "ec-1"))
    assert "signature" in await refusal(verifier, signed(RSA_KEY_2, "rsa-1"))


async def test_the_jwks_down_with_an_unknown_kid_is_unavailable_not_unauthorized() -> None:
    verifier, source, clock = setup()
    source.down = True
    with pytest.raises(KeysUnavailable) as unavailable:
        await verifier.verify(signed(RSA_KEY, "rsa-1"))
    assert unavailable.value.retry_after_s == COOLDOWN_S
    assert "connection refused" in str(unavailable.value)
    clock.now += 4
    with pytest.raises(KeysUnavailable) as unavailable:
        await verifier.verify(signed(RSA_KEY, "rsa-1"))
    assert unavailable.value.retry_after_s == 6  # the rest of the cooldown
    assert source.fetches == 1
    # Back up: the next attempt after the cooldown fetches and verifies.
    source.down = False
    clock.now += 6
    assert await verifier.verify(signed(RSA_KEY, "rsa-1")) == "alice"


async def test_cached_keys_keep_verifying_while_the_jwks_is_down() -> None:
    verifier, source, clock = setup()
    await verifier.verify(signed(RSA_KEY, "rsa-1"))
    source.down = True
    clock.now += MAX_AGE_S  # stale: refetched, which fails, so the cached keys serve on
    assert await verifier.verify(signed(RSA_KEY, "rsa-1")) == "alice"
    assert await verifier.verify(signed(EC_KEY, "ec-1")) == "alice"
    assert source.fetches == 2
    with pytest.raises(KeysUnavailable):
        await verifier.verify(signed(RSA_KEY_2, "rsa-2"))


async def test_a_withdrawn_key_stops_verifying_once_the_cache_is_stale() -> None:
    verifier, source, clock = setup()
    await verifier.verify(signed(RSA_KEY, "rsa-1"))
    source.document = jwks(jwk(EC_KEY, "ec-1"))
    clock.now += MAX_AGE_S - 1
    assert await verifier.verify(signed(RSA_KEY, "rsa-1")) == "alice"
    clock.now += 1
    assert "key id" in await refusal(verifier, signed(RSA_KEY, "rsa-1"))
    assert source.fetches == 2


async def test_concurrent_requests_for_an_unknown_kid_share_one_fetch() -> None:
    verifier, source, _ = setup()
    source.gate.clear()
    waiting = [asyncio.create_task(verifier.verify(signed(EC_KEY, "ec-1"))) for _ in range(5)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*waiting) == ["alice"] * 5
    assert source.fetches == 1


@pytest.mark.parametrize(("key", "kid"), [(RSA_KEY, "rsa-1"), (EC_KEY, "ec-1")])
async def test_the_claim_rules_are_those_of_hs256(key: PrivateKey, kid: str) -> None:
    verifier, _, _ = setup(issuer="https://id.example", audience="ai-jobs")
    good = {"iss": "https://id.example", "aud": "ai-jobs"}
    assert await verifier.verify(signed(key, kid, **good)) == "alice"
    assert "expired" in await refusal(verifier, signed(key, kid, exp=NOW - 31, **good))
    assert "exp" in await refusal(verifier, signed(key, kid, exp=None, **good))
    assert "issuer" in await refusal(verifier, signed(key, kid, aud="ai-jobs"))
    assert "issuer" in await refusal(verifier, signed(key, kid, iss="evil", aud="ai-jobs"))
    assert "audience" in await refusal(verifier, signed(key, kid, iss="https://id.example"))
    assert "sub" in await refusal(verifier, signed(key, kid, sub="", **good))


async def test_iss_and_aud_are_not_checked_unless_configured() -> None:
    verifier, _, _ = setup()
    assert await verifier.verify(signed(EC_KEY, "ec-1", iss="anyone", aud="any")) == "alice"


async def test_hs256_and_jwks_tokens_are_told_apart_by_alg() -> None:
    verifier, source, _ = setup(secrets=(SECRET,))
    hs256 = jwt.encode({"sub": "carol", "exp": NOW + 600}, SECRET, algorithm="HS256")
    assert await verifier.verify(hs256) == "carol"
    assert source.fetches == 0  # HS256 never needs the JWKS
    assert await verifier.verify(signed(RSA_KEY, "rsa-1")) == "alice"


async def test_the_alg_must_match_the_key_and_be_one_configured() -> None:
    verifier, _, _ = setup()
    # An RSA key under an EC kid, and a JWKS alg the gateway does not take.
    assert "does not match" in await refusal(verifier, signed(RSA_KEY, "ec-1"))
    assert "RS256" in await refusal(verifier, signed(RSA_KEY, "rsa-1", alg="RS512"))
    # Without secrets, HS256 is refused; in particular, not keyed with a public key.
    hs256 = jwt.encode({"sub": "mallory", "exp": NOW + 600}, SECRET, algorithm="HS256")
    assert "RS256" in await refusal(verifier, hs256)
    # Without a JWKS, RS256/ES256 are refused.
    only_secrets = TokenVerifier((SECRET,), clock=lambda: NOW)
    assert "HS256" in await refusal(only_secrets, signed(RSA_KEY, "rsa-1"))


async def test_a_jwks_token_must_name_its_key() -> None:
    verifier, source, _ = setup()
    assert "kid" in await refusal(verifier, signed(EC_KEY, None))
    assert source.fetches == 0


def test_only_rs256_and_es256_signing_keys_are_taken_from_a_jwks() -> None:
    document = jwks(
        jwk(RSA_KEY, "rsa-1"),
        jwk(EC_KEY, "enc", use="enc"),
        jwk(RSA_KEY_2, "rs512", alg="RS512"),
        {**jwk(EC_KEY, "x"), "kid": ""},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "EC", "kid": "broken"},
        "not-a-key",  # type: ignore[arg-type]
    )
    assert sorted(parse_jwks(document)) == ["rsa-1"]


@pytest.mark.parametrize(
    "document", [b"<html>", b"[]", b'{"keys": {}}', b'{"keys": []}', jwks({"kty": "EC"})]
)
async def test_a_document_that_is_no_usable_jwks_is_a_failed_fetch(document: bytes) -> None:
    with pytest.raises(JwksFetchError):
        parse_jwks(document)
    verifier, _, _ = setup(document)
    with pytest.raises(KeysUnavailable):
        await verifier.verify(signed(RSA_KEY, "rsa-1"))
