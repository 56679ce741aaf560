"""A small Server-Sent Events reader for any test: the events of a streamed httpx answer as
they arrive, comments and `retry:` included, so a test can assert on each field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec


@dataclass
class Event:
    event: str = "message"
    id: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return msgspec.json.decode(self.data)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """Each block up to a blank line as one `Event` (a comment-only block too)."""
    current = Event()
    seen = False
    async for line in response.aiter_lines():
        if line == "":
            if seen:
                yield current
            current, seen = Event(), False
            continue
        seen = True
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            current.comments.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "data":
            current.data = f"{current.data}\n{value}" if current.data else value
        elif name == "retry":
            current.retry = int(value)
