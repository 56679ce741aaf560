"""Turns msgspec's validation messages (`... - at `$.topic``) into the JSON pointers the
contract's `422` names (`/input/topic`).

The kinds of problem themselves, shared with the other services, are in `jobs_runtime.web`.
"""

from __future__ import annotations

import re
from typing import Final

from jobs_proto.api import ProblemDetail
from jobs_runtime.web import ProblemKind

# The gateway's own kinds of problem, beside the shared ones of `jobs_runtime.web`.
INVALID_CURSOR: Final = ProblemKind("invalid-cursor", "Invalid cursor", 400)
JOB_FINISHED: Final = ProblemKind("job-finished", "Job already finished", 409)
IDEMPOTENCY_CONFLICT: Final = ProblemKind(
    "idempotency-key-reused", "Idempotency-Key used with another request", 409
)
IDEMPOTENCY_IN_PROGRESS: Final = ProblemKind(
    "idempotency-key-in-progress", "Request with this Idempotency-Key in progress", 409
)
# The job's output is more than one job-store reply can carry (the request was fine).
OUTPUT_TOO_LARGE: Final = ProblemKind("output-too-large", "Job output too large to answer", 413)
TOO_MANY_REQUESTS: Final = ProblemKind("too-many-requests", "Too many requests", 429)
# The process holds `MAX_STREAMS` streams; another replica may have room.
STREAMS_FULL: Final = ProblemKind("streams-full", "Too many open streams", 503)

# msgspec ends a validation message with the path of the bad value: ` - at `$.input.topic``.
_AT: Final = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING: Final = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_STEP: Final = re.compile(r"\.(?P<name>[^.\[]+)|\[(?P<index>\d+)\]|\[\.\.\.\]")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def path_to_pointer(path: str) -> str:
    """A msgspec path after `$` (`.items[0].name`) as a JSON pointer (`/items/0/name`).

    `[...]` stands for a dictionary key msgspec does not name; the pointer then stops at the
    dictionary, the deepest place that can be named.
    """
    tokens: list[str] = []
    for step in _STEP.finditer(path):
        if step["name"] is not None:
            tokens.append(_escape(step["name"]))
        elif step["index"] is not None:
            tokens.append(step["index"])
        else:
            break
    return "".join(f"/{t}" for t in tokens)


def validation_detail(message: str, base: str = "") -> ProblemDetail:
    """One msgspec `ValidationError` message as a `422` entry, its pointer under `base`."""
    pointer = base
    text = message
    if at := _AT.search(message):
        pointer += path_to_pointer(at["path"])
        text = message[: at.start()]
    if missing := _MISSING.match(text):
        # msgspec names a missing field in its text, not its path: point at the field itself.
        pointer += "/" + _escape(missing["field"])
    return ProblemDetail(pointer=pointer, detail=text)
