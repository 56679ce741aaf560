"""The installed gateway serves its OpenAPI document and docs page without a token, and
answers CORS preflights for the origins in `CORS_ORIGINS` only."""

from collections.abc import AsyncIterator

import httpx
import pytest

from .test_gateway_processes import RunningGateway
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env

ALLOWED = "https://app.example"


@pytest.fixture
def gateway_env(gateway_base_env: dict[str, str]) -> dict[str, str]:
    return {**gateway_base_env, "CORS_ORIGINS": f"{ALLOWED}, http://localhost:5173"}


@pytest.fixture
async def anonymous(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        yield client


async def test_the_document_and_its_page_need_no_token(anonymous: httpx.AsyncClient) -> None:
    document = await anonymous.get("/openapi.json")
    assert document.status_code == 200
    assert document.json()["openapi"].startswith("3.1.")
    assert "/api/jobs/{jobId}" in document.json()["paths"]
    page = await anonymous.get("/docs")
    assert page.status_code == 200
    assert "/openapi.json" in page.text


async def test_preflights_are_answered_for_configured_origins_only(
    anonymous: httpx.AsyncClient,
) -> None:
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = await anonymous.options("/api/jobs", headers={"Origin": ALLOWED, **ask})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    refused = await anonymous.options(
        "/api/jobs", headers={"Origin": "https://evil.example", **ask}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
