"""Byte-level requests straight into an ASGI app, and hypothesis strategies for hostile ones:
raw paths, query strings, header values and bodies as a server like uvicorn would pass them on,
not as an HTTP client would tidy them up first (httpx quotes paths and refuses odd bytes).

Fuzz tests draw `RawRequest`s, `send` them, and check the answer and what was logged
(`LogCapture`): no `5xx` but the documented `503`s, and no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from jobs_runtime.logs import JsonFormatter

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class RawRequest:
    """One request as the server hands it to the app: `raw_path` and `query` as sent."""

    method: str
    raw_path: bytes
    query: bytes = b""
    headers: tuple[Header, ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """The status and the first bytes of the body (a stream is cut after its first chunk)."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


def _scope(request: RawRequest) -> dict[str, Any]:
    # uvicorn's decoding of the request target: percent-decoded, invalid UTF-8 replaced.
    path = urllib.parse.unquote(request.raw_path.decode("latin-1"))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": path,
        "raw_path": request.raw_path,
        "root_path": "",
        "query_string": request.query,
        "headers": [(name.lower(), value) for name, value in request.headers],
        "client": ("203.0.113.7", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


async def send(app: Any, request: RawRequest) -> RawAnswer:
    """`request` through `app`; an exception out of the app propagates (it would be a `500`
    and a traceback in uvicorn's log). A streaming answer is cut once its first body chunk
    has arrived: the client goes away, as one that has seen enough would."""
    answered = asyncio.Event()
    start: dict[str, Any] = {}
    chunks: list[bytes] = []
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send_message(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False) or chunks[0]:
                answered.set()

    app_call = asyncio.ensure_future(app(_scope(request), receive, send_message))
    waiter = asyncio.ensure_future(answered.wait())
    try:
        await asyncio.wait({app_call, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not app_call.done():
        # An open stream: the client hangs up and the app must let go of it.
        app_call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app_call
    else:
        app_call.result()
    assert "status" in start, "the app ended without answering"
    return RawAnswer(int(start["status"]), dict(start.get("headers", [])), b"".join(chunks))


class LogCapture(logging.Handler):
    """Every record logged while installed on the root logger, each formatted as the services
    write it (tracebacks included), so a test can look for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.formatter_ = JsonFormatter("fuzz")
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.formatter_.format(record))

    def tracebacks(self) -> list[str]:
        return [
            line
            for record, line in zip(self.records, self.lines, strict=True)
            if record.exc_info or "Traceback" in line
        ]

    def clear(self) -> None:
        self.records.clear()
        self.lines.clear()

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[LogCapture]:
        capture = cls()
        root = logging.getLogger()
        level = root.level
        root.addHandler(capture)
        root.setLevel(logging.DEBUG)
        try:
            yield capture
        finally:
            root.removeHandler(capture)
            root.setLevel(level)


# --- strategies --------------------------------------------------------------------------
# Each leans towards what broke a service before, so that a few dozen examples per route find
# it: bytes that are not UTF-8, a newline after an id, nesting past the decoder's limit, and
# numbers past Python's 4,300-digit limit for `int`.

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")

_LONG_NUMBERS = ("9" * 5000, "-" + "9" * 5000, "0" * 5000 + "1")
# Visible ASCII, as a request target carries it (`?` and `#` would end the path).
_TARGET_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#")
_SEGMENT = st.one_of(
    st.text(_TARGET_CHARS, max_size=12),
    # Any bytes at all once percent-decoded: a newline and NUL among them.
    st.binary(min_size=1, max_size=3).map(lambda b: "".join(f"%{c:02X}" for c in b)),
    st.sampled_from(["%0A", "%0D%0A", "%00", "%20", "..", ".", "%2F", "%FF", "%C3%A9", ""]),
    st.uuids().map(str),
    st.tuples(st.uuids(), st.sampled_from(["%0A", "%00", "%0D%0A"])).map(
        lambda pair: f"{pair[0]}{pair[1]}"
    ),
    st.sampled_from(_LONG_NUMBERS),
)
# One path in four gets a suffix: the rest reach the route's own code.
_SUFFIXES = st.one_of(
    st.just(""), st.just(""), st.just(""), st.sampled_from(["/", "%0A", "/extra", "//", "/%00"])
)


@st.composite
def _paths(draw: st.DrawFn, template: str) -> bytes:
    parts = [draw(_SEGMENT) if part.startswith("{") else part for part in template.split("/")]
    return ("/".join(parts) + draw(_SUFFIXES)).encode("ascii")


def raw_paths(template: str) -> st.SearchStrategy[bytes]:
    """`template` (`/api/jobs/{job_id}`) with hostile `{...}` parameters, sometimes a suffix."""
    return _paths(template)


any_paths = st.lists(_SEGMENT, max_size=5).map(lambda ss: ("/" + "/".join(ss)).encode("ascii"))

_VALUES = st.one_of(
    st.sampled_from(_LONG_NUMBERS),
    st.sampled_from(["%FF", "%00", "\u0661\u0662", "1e9", "-1", "0x10", "", " 7", "7\n"]),
    st.text(max_size=20),
    st.integers(-(10**30), 10**30).map(str),
)


@st.composite
def _query(draw: st.DrawFn, names: Sequence[str]) -> bytes:
    # Each of the app's parameters, every time: a coin per name would mostly come up "absent"
    # (hypothesis starts from the simplest choices), and then a few dozen examples miss one.
    pairs = [(name, draw(_VALUES)) for name in names]
    pairs += draw(st.lists(st.tuples(st.text(max_size=6), _VALUES), max_size=2))
    return urllib.parse.urlencode(pairs).encode("ascii")


def query_strings(names: Sequence[str] = ()) -> st.SearchStrategy[bytes]:
    """Raw query strings: the app's parameters (`names`) with hostile values and unknown ones,
    or raw bytes that are not UTF-8."""
    return st.one_of(_query(names), _query(names), st.binary(max_size=40))


# Header values as HTTP/1.1 servers pass them on: visible ASCII, spaces, tabs and obs-text.
header_values = st.one_of(
    st.binary(max_size=60).map(
        lambda b: bytes(c for c in b if c in (0x09, 0x20) or 0x21 <= c <= 0x7E or c >= 0x80)
    ),
    st.sampled_from(
        [
            *(n.encode() for n in _LONG_NUMBERS),
            "²".encode(),
            b"-1",
            b"",
            b"*",
            b'W/"x"',
            b"application/json",
            b"\xff\xfe",
        ]
    ),
)


def headers(
    names: Sequence[str], fixed: st.SearchStrategy[dict[str, bytes]] | None = None
) -> st.SearchStrategy[tuple[Header, ...]]:
    """`fixed` (say, a good token) when given, then some of `names` with hostile values."""
    hostile = st.lists(
        st.tuples(st.sampled_from(list(names)).map(str.encode), header_values), max_size=4
    )
    base = fixed if fixed is not None else st.just({})
    return st.tuples(base, hostile).map(
        lambda both: tuple((k.encode(), v) for k, v in both[0].items()) + tuple(both[1])
    )


def _nested(depth: int, opener: bytes, closer: bytes, inner: bytes = b"1") -> bytes:
    return opener * depth + inner + closer * depth


# Depths around and past msgspec's limit (about 1,000) and Python's recursion limit.
_DEPTHS = st.one_of(st.integers(1, 50), st.integers(900, 1100), st.integers(1100, 5000))
json_bodies = st.one_of(
    st.binary(max_size=200),
    # Bytes in a string that are not UTF-8 (an encoded surrogate among them).
    st.binary(min_size=1, max_size=8).map(lambda b: b'{"type": "' + b + b'", "input": {}}'),
    st.sampled_from([b'"\xed\xa0\x80"', b'{"topic": "\xff"}', b"\xef\xbb\xbf{}", b"", b"null"]),
    _DEPTHS.map(lambda d: _nested(d, b"[", b"]")),
    _DEPTHS.map(lambda d: _nested(d, b'{"a":', b"}")),
    _DEPTHS.map(lambda d: b'{"topic": "t", "x": ' + _nested(d, b"[", b"]") + b"}"),
    _DEPTHS.map(lambda d: b"[" * d),
    st.sampled_from([b"9" * 5000, b'{"topic": 1e999}', b'{"topic": ' + b"9" * 5000 + b"}"]),
)


def route_table(app: Any) -> list[tuple[str, str]]:
    """Each (method, path template) a Starlette app routes, e.g. `("GET", "/api/jobs/{job_id}")`."""
    return sorted(
        (method, route.path)
        for route in app.routes
        # Starlette adds HEAD to every GET route: the GET is enough to reach its code.
        for method in (getattr(route, "methods", None) or {"GET"}) - {"HEAD"}
    )


def requests_to(
    method: str,
    template: str,
    *,
    header_names: Sequence[str],
    query_names: Sequence[str] = (),
    fixed_headers: st.SearchStrategy[dict[str, bytes]] | None = None,
    bodies: st.SearchStrategy[bytes] = json_bodies,
) -> st.SearchStrategy[RawRequest]:
    """Hostile requests to one route with its own method, so that they reach its code."""
    return st.builds(
        RawRequest,
        method=st.just(method),
        raw_path=raw_paths(template),
        query=query_strings(query_names),
        headers=headers(header_names, fixed_headers),
        body=bodies,
    )


def requests_anywhere(
    routes: Sequence[tuple[str, str]],
    *,
    header_names: Sequence[str],
    fixed_headers: st.SearchStrategy[dict[str, bytes]] | None = None,
) -> st.SearchStrategy[RawRequest]:
    """Hostile requests with any method to the routes' paths and to any other path (the
    app's 404s and 405s)."""
    paths = st.one_of(
        st.sampled_from(sorted({template for _, template in routes})).flatmap(raw_paths),
        any_paths,
    )
    return st.builds(
        RawRequest,
        method=st.sampled_from(METHODS),
        raw_path=paths,
        query=query_strings(),
        headers=headers(header_names, fixed_headers),
        body=json_bodies,
    )
