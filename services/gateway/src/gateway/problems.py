"""Turns msgspec's validation messages (`... - at `$.topic``) into the JSON pointers the
contract's `422` names (`/input/topic`), each with a sentence a person can read
(`sentences.py`).

The kinds of problem themselves are HTTP's: `adapters/http/problems.py` (and, shared with the
other services, `jobs_runtime.web`).
"""

from __future__ import annotations

import re
from typing import Final

from jobs_proto.api import ProblemDetail

from .sentences import Schema, field_schema, sentence

# msgspec ends a validation message with the path of the bad value: ` - at `$.input.topic``.
_AT: Final = re.compile(r" - at `\$(?P<path>[^`]*)`$")
# msgspec names a missing or unknown field in its text, not in its path.
_NAMED_FIELD: Final = re.compile(
    r"^Object (missing required|contains unknown) field `(?P<field>[^`]+)`$"
)
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


def validation_detail(message: str, base: str = "", schema: Schema | None = None) -> ProblemDetail:
    """One msgspec `ValidationError` message as a `422` entry: its pointer under `base`, and
    a sentence about the value there; `schema` is the JSON Schema of the value at `base` (for
    the bounds a message leaves out)."""
    pointer = ""
    text = message
    if at := _AT.search(message):
        pointer += path_to_pointer(at["path"])
        text = message[: at.start()]
    if named := _NAMED_FIELD.match(text):
        # Point at the field itself: the client shows the sentence beside it.
        pointer += "/" + _escape(named["field"])
    shape = field_schema(schema, pointer) if schema is not None else None
    return ProblemDetail(pointer=base + pointer, detail=sentence(text, shape))
