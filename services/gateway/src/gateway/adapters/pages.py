"""The gateway's HTML pages, `/docs` (Swagger UI, vendored under `gateway/static/`) and the dev
demo page, with their scripts and styles served from the gateway itself, every page under a
strict Content-Security-Policy: no code from another origin, no inline script or style.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources
from typing import Final

from starlette.responses import HTMLResponse, Response

SWAGGER_UI_VERSION: Final = "5.36.0"
DOCS_ASSETS: Final = "/docs/assets"

# Pages run only the scripts and styles the gateway serves, fetch only from it, and cannot be
# framed: the demo page keeps a token in `localStorage`, which any script on this origin can
# read, so no script from elsewhere (a CDN, an injected `<script>`) may ever run here.
# `img-src data:`: Swagger UI's stylesheet draws its icons as data: URIs.
CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Assets change only with a release; a day in a browser's cache is plenty.
ASSET_HEADERS: Final = {
    "Cache-Control": "public, max-age=86400",
    "X-Content-Type-Options": "nosniff",
}


def page_response(body: str | bytes) -> Response:
    """An HTML page with the headers every page of the gateway carries."""
    return HTMLResponse(body, headers=PAGE_HEADERS)


@dataclass(frozen=True, slots=True)
class Asset:
    """A static file the gateway serves: its bytes, read once, and its media type."""

    body: bytes
    media_type: str

    def response(self) -> Response:
        return Response(self.body, media_type=self.media_type, headers=ASSET_HEADERS)


def docs_assets() -> dict[str, Asset]:
    """The files `/docs` loads, by their path under `DOCS_ASSETS`, read from the package."""
    static = resources.files("gateway") / "static"
    swagger = static / "swagger-ui"
    return {
        "swagger-ui-bundle.js": Asset(
            (swagger / "swagger-ui-bundle.js").read_bytes(), "text/javascript"
        ),
        "swagger-ui.css": Asset((swagger / "swagger-ui.css").read_bytes(), "text/css"),
        "docs.js": Asset((static / "docs.js").read_bytes(), "text/javascript"),
    }


def docs_page(document_url: str) -> str:
    """The page rendering the document with Swagger UI from the gateway's own files; without
    scripts it still shows the document's address."""
    url = html.escape(document_url)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>AI jobs gateway API</title>
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">
</head>
<body>
<noscript>The API description is at <a href="{url}">{url}</a>.</noscript>
<div id="swagger-ui" data-url="{url}"><a href="{url}">{url}</a></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script src="{DOCS_ASSETS}/docs.js"></script>
</body>
</html>
"""
