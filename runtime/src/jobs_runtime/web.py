"""The HTTP edge every service shares: problem bodies (`jobs_proto.problems`) answered as
`application/problem+json`, reading a request body under a size limit, and the query string
made safe for Starlette before any app sees it."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from jobs_proto.api import Problem
from jobs_proto.problems import PROBLEM_MEDIA_TYPE


def problem_response(body: Problem, headers: Mapping[str, str] | None = None) -> Response:
    """`body` as `application/problem+json`, with its own status."""
    return Response(
        msgspec.json.encode(body), body.status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The raw body, or `None` as soon as it is known to exceed `limit` bytes.

    The declared `Content-Length` is trusted only to refuse early, before reading; the bytes
    are counted as they arrive, so a chunked body or a lying client cannot get past the limit.
    Whatever is left unread, uvicorn reads and discards after the answer, so the sender still
    sees the refusal.
    """
    declared = request.headers.get("content-length", "")
    # ASCII digits only (`isdigit` also takes "²", which `int` refuses); more than 18 of them
    # is over any limit, and spares `int` a hostile length.
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# Printable ASCII but space: what an escaped query string keeps as it is.
_QUERY_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F))


class EscapedQueryString:
    """ASGI middleware: bytes of the query string outside printable ASCII are percent-escaped.

    Servers pass the query string on as sent, and Starlette decodes it as UTF-8 when it builds
    `request.url`: one byte that is not UTF-8 raised `UnicodeDecodeError` (a `500`) in every
    route and error handler alike, found by fuzzing. Escaped, the bytes mean what they did
    (`%80` and a raw 0x80 decode the same way in `request.query_params`), so an app answers
    such a request like any other with a bad parameter.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query: bytes = scope.get("query_string", b"")
        if scope["type"] == "http" and not query.isascii():
            escaped = urllib.parse.quote_from_bytes(query, safe=_QUERY_SAFE).encode()
            scope = {**scope, "query_string": escaped}
        await self.app(scope, receive, send)
