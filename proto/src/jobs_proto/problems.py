"""RFC 9457 problem bodies every HTTP edge answers: the kinds with their stable type URIs,
titles and statuses, defined once and free of any web framework (the OpenAPI document and the
HTTP adapters both name them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

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
# A good token that does not open this route (a job token anywhere but its own job's reads).
FORBIDDEN: Final = ProblemKind("forbidden", "Forbidden", 403)
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
        FORBIDDEN,
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
