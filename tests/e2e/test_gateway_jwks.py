"""The gateway as a process verifying RS256/ES256 tokens with keys from a local JWKS server:
served keys are accepted, a rotated-in key after the automatic refetch, a key never served
is `401`, the JWKS server down with an unknown key is `503`, the claims are checked as for
HS256, and HS256 tokens keep working beside the JWKS."""

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jobs_runtime.http import HttpServer
from jobs_testkit.processes import ServiceProcess, command_path

from .test_gateway_processes import RunningGateway, bearer
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
JOB = {"type": "video_outline", "input": {"topic": "tides", "sections": 3}}
ISSUER = "https://id.example"
AUDIENCE = "ai-jobs"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
NEVER_SERVED = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        entry = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        entry = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**entry, "kid": kid, "use": "sig"}


def signed(key: PrivateKey, kid: str, sub: str = "alice", ttl_s: float = 300, **claims: Any) -> str:
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    payload = {"sub": sub, "exp": int(time.time() + ttl_s), **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class JwksServer:
    """Serves `{"keys": keys}` at `url`; `keys` may be changed (rotation) between requests."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")]
        self.fetches = 0
        self._server = HttpServer(
            Starlette(routes=[Route("/.well-known/jwks.json", self._jwks)]), "127.0.0.1", 0
        )
        self.url = ""

    async def _jwks(self, request: Request) -> JSONResponse:
        self.fetches += 1
        return JSONResponse({"keys": self.keys})

    async def start(self) -> None:
        await self._server.start()
        self.url = f"http://127.0.0.1:{self._server.port}/.well-known/jwks.json"

    async def stop(self) -> None:
        await self._server.stop()


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    await server.start()
    yield server
    await server.stop()


@contextmanager
def started_gateway(tmp_path: Path, env: dict[str, str]) -> Iterator[RunningGateway]:
    process = ServiceProcess([command_path("gateway")], env, tmp_path / "gateway.log")
    with process:
        # The JWKS is fetched on the first token that needs it, not at startup.
        process.wait_http(f"http://127.0.0.1:{env['ADMIN_PORT']}/readyz")
        yield RunningGateway(f"http://127.0.0.1:{env['HTTP_PORT']}", process)
        assert process.terminate() == 0, process.log


@pytest.fixture
def jwks_env(gateway_env: dict[str, str], jwks_server: JwksServer) -> dict[str, str]:
    """Both HS256 (the shared fixture's secret) and the JWKS; every unknown kid refetches."""
    return {
        **gateway_env,
        "AUTH_JWKS_URL": jwks_server.url,
        "AUTH_JWKS_REFRESH_COOLDOWN_S": "0",
    }


@pytest.fixture
async def api(tmp_path: Path, jwks_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    with started_gateway(tmp_path, jwks_env) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            yield client


def assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


async def test_rs256_and_es256_tokens_of_served_keys_are_accepted(
    api: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    for token in (signed(RSA_KEY, "rsa-1"), signed(EC_KEY, "ec-1"), signed(RSA_KEY, "rsa-1")):
        response = await api.post("/api/jobs", json=JOB, headers=auth(token))
        assert response.status_code == 202, response.text
    assert jwks_server.fetches == 1  # cached after the first fetch


async def test_hs256_tokens_still_work_beside_the_jwks(
    api: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    response = await api.post("/api/jobs", json=JOB, headers=bearer("alice"))
    assert response.status_code == 202, response.text
    assert jwks_server.fetches == 0
    response = await api.post("/api/jobs", json=JOB, headers=auth(signed(EC_KEY, "ec-1")))
    assert response.status_code == 202, response.text


async def test_a_rotated_in_key_is_accepted_after_the_automatic_refetch(
    api: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    response = await api.post("/api/jobs", json=JOB, headers=auth(signed(RSA_KEY, "rsa-1")))
    assert response.status_code == 202, response.text
    jwks_server.keys = [jwk(RSA_KEY_2, "rsa-2"), *jwks_server.keys]
    response = await api.post("/api/jobs", json=JOB, headers=auth(signed(RSA_KEY_2, "rsa-2")))
    assert response.status_code == 202, response.text
    assert jwks_server.fetches == 2


async def test_a_key_the_server_never_served_is_unauthorized(
    api: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    for token in (signed(NEVER_SERVED, "rsa-9"), signed(NEVER_SERVED, "rsa-1")):
        response = await api.post("/api/jobs", json=JOB, headers=auth(token))
        assert_refused(response, 401)
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_an_expired_token_is_unauthorized(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/jobs", json=JOB, headers=auth(signed(EC_KEY, "ec-1", ttl_s=-60))
    )
    assert_refused(response, 401)
    assert "expired" in response.json()["detail"]


async def test_the_jwks_server_down_with_an_unknown_kid_is_unavailable(
    api: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    response = await api.post("/api/jobs", json=JOB, headers=auth(signed(RSA_KEY, "rsa-1")))
    assert response.status_code == 202, response.text
    await jwks_server.stop()
    # The cached key keeps verifying; a key not cached cannot be looked up: retry later.
    response = await api.post("/api/jobs", json=JOB, headers=auth(signed(EC_KEY, "ec-1")))
    assert response.status_code == 202, response.text
    response = await api.post("/api/jobs", json=JOB, headers=auth(signed(RSA_KEY_2, "rsa-2")))
    assert_refused(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    assert "www-authenticate" not in response.headers
    # GET checks the token the same way.
    response = await api.get("/api/jobs/0", headers=auth(signed(RSA_KEY_2, "rsa-2")))
    assert_refused(response, 503)


async def test_issuer_and_audience_are_enforced_when_configured(
    tmp_path: Path, jwks_env: dict[str, str]
) -> None:
    env = {**jwks_env, "AUTH_JWT_ISSUER": ISSUER, "AUTH_JWT_AUDIENCE": AUDIENCE}
    with started_gateway(tmp_path, env) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url) as api:
            good = signed(RSA_KEY, "rsa-1", iss=ISSUER, aud=AUDIENCE)
            response = await api.post("/api/jobs", json=JOB, headers=auth(good))
            assert response.status_code == 202, response.text
            wrong: tuple[dict[str, Any], ...] = (
                {"iss": "https://evil.example", "aud": AUDIENCE},
                {"iss": ISSUER, "aud": "someone-else"},
                {"aud": AUDIENCE},
                {"iss": ISSUER},
            )
            for claims in wrong:
                token = signed(EC_KEY, "ec-1", **claims)
                response = await api.post("/api/jobs", json=JOB, headers=auth(token))
                assert_refused(response, 401)
