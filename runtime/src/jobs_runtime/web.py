"""The HTTP edge every service shares: RFC 9457 problem bodies with stable type URIs, answered
as `application/problem+json`, reading a request body under a size limit, and the query string
made safe for Starlette before any app sees it."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from jobs_proto.api import Problem, ProblemDetail

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_PREFIX: Final = "urn:ai-jobs:problem:"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One kind of problem: its status and a title that does not vary between occurrences."""

    slug: str
    title: str
    status: int

    @property
    def type(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.slug


UNAUTHORIZED: Final = ProblemKind("unauthorized", "Missing or invalid token", 401)
NOT_FOUND: Final = ProblemKind("not-found", "Not found", 404)
METHOD_NOT_ALLOWED: Final = ProblemKind("method-not-allowed", "Method not allowed", 405)
UNSUPPORTED_MEDIA_TYPE: Final = ProblemKind("unsupported-media-type", "Unsupported media type", 415)
PAYLOAD_TOO_LARGE: Final = ProblemKind("payload-too-large", "Request body too large", 413)
MALFORMED_JSON: Final = ProblemKind("malformed-json", "Malformed JSON", 400)
VALIDATION: Final = ProblemKind("validation", "Invalid request", 422)
UNAVAILABLE: Final = ProblemKind("unavailable", "Service unavailable", 503)
INTERNAL: Final = ProblemKind("internal", "Internal error", 500)

_BY_STATUS: Final[Mapping[int, ProblemKind]] = {
    k.status: k
    for k in (
        UNAUTHORIZED,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        UNSUPPORTED_MEDIA_TYPE,
        PAYLOAD_TOO_LARGE,
        MALFORMED_JSON,
        VALIDATION,
        UNAVAILABLE,
        INTERNAL,
    )
}


def problem(kind: ProblemKind, detail: str, errors: list[ProblemDetail] | None = None) -> Problem:
    return Problem(
        type=kind.type, title=kind.title, status=kind.status, detail=detail, errors=errors
    )


def kind_for_status(status: int) -> ProblemKind:
    """The kind of an HTTP status raised by the framework (unknown route, wrong method...)."""
    return _BY_STATUS.get(status) or ProblemKind(f"http-{status}", "Request refused", status)


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
