"""The shared HTTP edge: bodies read under a limit, problems answered as `problem+json`."""

from collections.abc import Sequence

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from jobs_proto.api import Problem
from jobs_proto.problems import PAYLOAD_TOO_LARGE, PROBLEM_MEDIA_TYPE, kind_for_status, problem
from jobs_runtime.web import EscapedQueryString, problem_response, read_limited

LIMIT = 10


class Body:
    """An ASGI `receive` sending `chunks` as `http.request` messages, counting what is read."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.received = 0

    async def __call__(self) -> Message:
        chunk = self.chunks[self.received]
        self.received += 1
        return {
            "type": "http.request",
            "body": chunk,
            "more_body": self.received < len(self.chunks),
        }


def request(body: Body, headers: dict[str, str] | None = None) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope, body)


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    body = Body([b"x" * (LIMIT + 1)])
    assert await read_limited(request(body, {"Content-Length": str(LIMIT + 1)}), LIMIT) is None
    assert body.received == 0


async def test_a_chunked_body_over_the_limit_is_refused_while_reading() -> None:
    body = Body([b"x" * 4, b"x" * 4, b"x" * 4, b"never read"])
    assert await read_limited(request(body), LIMIT) is None
    assert body.received == 3


async def test_a_body_at_the_limit_is_read() -> None:
    body = Body([b"abcd", b"efgh", b"ij"])
    assert await read_limited(request(body), LIMIT) == b"abcdefghij"
    declared = Body([b"abcdefghij"])
    assert await read_limited(request(declared, {"Content-Length": str(LIMIT)}), LIMIT) == (
        b"abcdefghij"
    )


def test_a_problem_response_is_problem_json_with_its_status() -> None:
    body = problem(PAYLOAD_TOO_LARGE, "too big")
    response = problem_response(body, {"Retry-After": "2"})
    assert response.status_code == 413
    assert response.media_type == PROBLEM_MEDIA_TYPE
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "2"
    assert msgspec.json.decode(bytes(response.body), type=Problem) == Problem(
        type="urn:ai-jobs:problem:payload-too-large",
        title="Request body too large",
        status=413,
        detail="too big",
    )


def test_a_status_without_a_kind_still_has_one() -> None:
    assert kind_for_status(404).type == "urn:ai-jobs:problem:not-found"
    assert kind_for_status(418).type == "urn:ai-jobs:problem:http-418"
    assert kind_for_status(418).status == 418


async def test_a_hostile_declared_length_is_counted_not_parsed() -> None:
    # "²" is a digit to `str.isdigit` but not to `int`; 5,000 digits are past `int`'s limit.
    # Both raised `ValueError` (a 500) before; now only the bytes that arrive count.
    for declared in ("²", "1²", "9" * 5000):
        body = Body([b"small"])
        headers = [(b"content-length", declared.encode("utf-8"))]
        scope = {"type": "http", "method": "POST", "path": "/", "query_string": b""}
        read = await read_limited(Request({**scope, "headers": headers}, body), LIMIT)
        assert read == (None if declared.isascii() else b"small")


async def test_a_query_string_that_is_not_utf8_reaches_the_app_escaped() -> None:
    # Starlette's `request.url` decodes the query string as UTF-8: a raw 0x80 raised in every
    # route and error handler (a 500), found by the byte-level fuzz.
    seen: list[tuple[str, str | None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        seen.append((str(request.url), request.query_params.get("job")))
        await Response(status_code=204)(scope, receive, send)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    for query, job in ((b"job=\x80\xff", "\ufffd\ufffd"), (b"job=abc", "abc")):
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)  # noqa: B023  # awaited within this iteration

        await EscapedQueryString(app)({**scope, "query_string": query}, Body([b""]), send)
        assert sent[0]["status"] == 204
        assert seen[-1][1] == job
