"""Every kind of refusal the gateway answers, as RFC 9457 problem bodies with stable type URIs.

Also turns msgspec's validation messages (`... - at `$.topic``) into the JSON pointers the
contract's `422` names (`/input/topic`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from jobs_proto.api import Problem, ProblemDetail

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_TYPE_PREFIX: Final = "urn:ai-jobs:problem:"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One kind of problem: its status and a title that does not vary between occurrences."""

    slug: str
    title: str
    status: int

    @property
    def type(self) -> str:
        return _TYPE_PREFIX + self.slug


UNAUTHORIZED: Final = ProblemKind("unauthorized", "Missing or invalid token", 401)
NOT_FOUND: Final = ProblemKind("not-found", "Not found", 404)
METHOD_NOT_ALLOWED: Final = ProblemKind("method-not-allowed", "Method not allowed", 405)
UNSUPPORTED_MEDIA_TYPE: Final = ProblemKind("unsupported-media-type", "Unsupported media type", 415)
PAYLOAD_TOO_LARGE: Final = ProblemKind("payload-too-large", "Request body too large", 413)
MALFORMED_JSON: Final = ProblemKind("malformed-json", "Malformed JSON", 400)
VALIDATION: Final = ProblemKind("validation", "Invalid request", 422)
UNAVAILABLE: Final = ProblemKind("unavailable", "Service unavailable", 503)
INTERNAL: Final = ProblemKind("internal", "Internal error", 500)

_BY_STATUS: Final = {
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
