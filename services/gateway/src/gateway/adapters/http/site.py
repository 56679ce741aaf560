"""The public pages: the OpenAPI document (`/openapi.json`), its page (`/docs`) with the
Swagger UI files it loads, and the dev demo page (`/`) with its scripts, style, the client it
is built on and the chart library it draws with. No token needed: a client can be written
before it has one."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.adapters.pages import DOCS_ASSETS, docs_assets, docs_page, page_response
from gateway.openapi import openapi_document

from .checks import JSON_MEDIA_TYPE
from .ports import GatewayPorts
from .problems import Endpoint, answered

log = logging.getLogger("gateway.http")

OPENAPI_PATH: Final = "/openapi.json"
# The demo page, its script and style, and the client it is built on live in the repository
# (`make run`, tests), not in the installed package.
DEMO_DIR: Final = Path("services", "gateway", "demo")
DEMO_PAGE_FILE: Final = DEMO_DIR / "index.html"
CLIENT_FILE: Final = Path("clients", "js", "jobs-client.js")
DEMO_CLIENT_PATH: Final = "/demo/jobs-client.js"
# uPlot, vendored unchanged under `demo/vendor/uplot/` (its README says from where and how to
# update it): the "My jobs" view's chart.
UPLOT_VERSION: Final = "1.6.32"
# Served at `/demo/<name>`, with their media types.
DEMO_ASSETS: Final = {
    "demo.js": "text/javascript",
    "demo.css": "text/css",
    "my-jobs.js": "text/javascript",
    "vendor/uplot/uPlot.esm.js": "text/javascript",
    "vendor/uplot/uPlot.min.css": "text/css",
}


def documentation(ideation_routes: Mapping[str, str]) -> list[Route]:
    """`/openapi.json`, `/docs` and the Swagger UI files it loads: public, so that a client can
    be written before it has a token. The document is built and encoded once, the files read
    once; they only change with the code."""
    document = msgspec.json.encode(openapi_document(ideation_routes))
    page = docs_page(OPENAPI_PATH)
    assets = docs_assets()

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type=JSON_MEDIA_TYPE)

    async def docs(request: Request) -> Response:
        return page_response(page)

    def docs_asset(name: str) -> Endpoint:
        async def asset(request: Request) -> Response:
            return assets[name].response()

        return asset

    return [
        Route(OPENAPI_PATH, answered(openapi_json), methods=["GET"]),
        Route("/docs", answered(docs), methods=["GET"]),
        *(
            Route(f"{DOCS_ASSETS}/{name}", answered(docs_asset(name)), methods=["GET"])
            for name in assets
        ),
    ]


def demo(ports: GatewayPorts) -> list[Route]:
    """`/` and the client it loads, public, when the demo page is on and its files exist
    (they live in the repository, not in the package: the demo is for development)."""
    if not ports.demo_page:
        return []
    repository = next(
        (p for p in Path(__file__).resolve().parents if (p / DEMO_PAGE_FILE).is_file()), None
    )
    if repository is None or not (repository / CLIENT_FILE).is_file():
        log.warning("demo page off: its files are not beside this installation")
        return []
    page, client = repository / DEMO_PAGE_FILE, repository / CLIENT_FILE

    # Read on each request: the demo is for development, where the files change.
    async def demo_page(request: Request) -> Response:
        return page_response(page.read_bytes())

    async def demo_client(request: Request) -> Response:
        return Response(client.read_bytes(), media_type="text/javascript")

    def demo_asset(name: str, media_type: str) -> Endpoint:
        async def asset(request: Request) -> Response:
            return Response((repository / DEMO_DIR / name).read_bytes(), media_type=media_type)

        return asset

    return [
        Route("/", answered(demo_page), methods=["GET"]),
        Route(DEMO_CLIENT_PATH, answered(demo_client), methods=["GET"]),
        *(
            Route(f"/demo/{name}", answered(demo_asset(name, media_type)), methods=["GET"])
            for name, media_type in DEMO_ASSETS.items()
        ),
    ]
