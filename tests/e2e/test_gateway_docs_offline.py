"""`/docs` from the gateway alone: the page names no other origin, and every script and style it
loads (and every asset those name by a relative URL) comes from the gateway; the document it
renders describes itself relatively (`servers: [{"url": "/"}]`). Also the `422` a real gateway
answers reads as a sentence."""

import re
from collections.abc import AsyncIterator
from urllib.parse import urljoin

import httpx
import pytest

from .test_gateway_processes import RunningGateway, bearer
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env

_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
_CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)["']?\s*\)""")
_OTHER_ORIGIN = re.compile(r"(?:[a-z]+:)?//", re.IGNORECASE)
_ABSOLUTE = re.compile(r"""(?:src|href)\s*=\s*["'](?:[a-z]+:)?//""", re.IGNORECASE)


@pytest.fixture
async def anonymous(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    # No proxy nor any other host: every request goes to the gateway or fails.
    async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as client:
        yield client


async def test_docs_and_everything_they_load_come_from_the_gateway(
    anonymous: httpx.AsyncClient,
) -> None:
    page = await anonymous.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert not _ABSOLUTE.search(page.text), "the page names another origin"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    references = [r for r in _REFERENCE.findall(page.text) if not r.startswith("#")]
    assets = [r for r in references if r != "/openapi.json"]
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    for reference in references:
        loaded = await anonymous.get(urljoin("/docs", reference))
        assert loaded.status_code == 200, reference
        assert loaded.content, reference
        if reference.endswith(".css"):
            # A stylesheet's own assets (fonts, images): inline, or from the gateway too.
            for url in _CSS_URL.findall(loaded.text):
                if not url.startswith("data:"):
                    assert not _OTHER_ORIGIN.match(url), url
                    fetched = await anonymous.get(urljoin(urljoin("/docs", reference), url))
                    assert fetched.status_code == 200, url
    # The scripts start Swagger UI with the document's address from the page itself.
    starter = (await anonymous.get("/docs/assets/docs.js")).text
    assert "SwaggerUIBundle" in starter
    assert "validatorUrl: null" in starter


async def test_the_document_describes_the_gateway_serving_it(
    anonymous: httpx.AsyncClient,
) -> None:
    document = (await anonymous.get("/openapi.json")).json()
    assert document["servers"] == [{"url": "/"}]
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert all(re.fullmatch(r"[a-z]+([A-Z][a-z]*)*", op["operationId"]) for op in operations)
    schemas = document["components"]["schemas"]
    for name in ("ScriptGenerationInput", "ScriptGenerationOutput", "ScriptGenerationJob"):
        assert name in schemas
    assert schemas["CreateJob"]["discriminator"]["propertyName"] == "type"
    assert "nextCursor" in schemas["JobPage"]["properties"]


async def test_a_422_reads_as_a_sentence(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice")) as api:
        blank = await api.post("/api/ideation/generate-script", json={"topic": " "})
        missing = await api.post("/api/jobs", json={"type": "title_generation", "input": {}})
        too_many = await api.post(
            "/api/jobs", json={"type": "title_generation", "input": {"topic": "t", "count": 99}}
        )
        limit = await api.get("/api/jobs", params={"limit": "0"})
    for answer in (blank, missing, too_many, limit):
        assert answer.status_code == 422, answer.text
    assert blank.json()["errors"] == [{"pointer": "/topic", "detail": "must not be empty"}]
    assert missing.json()["errors"] == [{"pointer": "/input/topic", "detail": "is required"}]
    assert too_many.json()["errors"] == [
        {"pointer": "/input/count", "detail": "must be an integer from 1 to 50"}
    ]
    assert limit.json()["errors"] == [
        {"parameter": "limit", "detail": "must be an integer from 1 to 200, got 0"}
    ]
