"""The checks every API request goes through, in the contract's order (token `401`, request
rate `429`, content type `415`, size `413`, JSON `400`), and the small parsers of a request's
parts (the path's job id, `If-None-Match`). A check that fails raises `Refusal`, which the app
answers as `application/problem+json` once."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import TokenVerifier
from gateway.job_tokens import JobTokenOutOfScope
from gateway.jobviews import etag
from gateway.jwks import KeysUnavailable
from gateway.limits import RequestRate
from gateway.tokens import AuthError, Caller
from jobs_proto import wire
from jobs_proto.api import ProblemDetail
from jobs_proto.problems import (
    FORBIDDEN,
    MALFORMED_JSON,
    PAYLOAD_TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    ProblemKind,
    problem,
)
from jobs_runtime.web import read_limited

__all__ = ["etag"]  # re-exported: the ETag of a job's answer belongs with its check

log = logging.getLogger("gateway.http")

JSON_MEDIA_TYPE: Final = "application/json"
# Set in a request's scope by the lean path (`fast_admit.py`) once it counted the request
# against the rate, before handing the request to its route: counted once.
RATE_COUNTED: Final = "gateway.rate_counted"
# The query parameter that may carry the token on the event routes.
ACCESS_TOKEN: Final = "access_token"
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


class Refusal(Exception):
    """An answer that is a problem: raised by a check, turned into `problem+json` once."""

    def __init__(
        self,
        kind: ProblemKind,
        detail: str,
        *,
        errors: list[ProblemDetail] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = problem(kind, detail, errors)
        self.headers = dict(headers or {})


def json_response(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(msgspec.json.encode(body), status, headers=headers, media_type=JSON_MEDIA_TYPE)


async def identify(
    verifier: TokenVerifier,
    request: Request,
    *,
    query_token: bool = False,
    job_token: bool = False,
    job_query_token: bool = False,
) -> Caller:
    """The caller (user id and budget claim), or `401` with `WWW-Authenticate: Bearer`; `503` with
    `Retry-After` when the token's JWKS key is unknown and the JWKS cannot be fetched (see
    `KeysUnavailable`: the token may well be good, so the client keeps it and retries).

    With `query_token` (the event routes only: `EventSource` cannot send headers) a request
    without `Authorization` may carry the token as `?access_token=`. With `job_token` (the
    routes reading one job) a job token is accepted too; elsewhere a good one is `403`. With
    `job_query_token` (`GET /api/jobs/{jobId}`) `?access_token=` may carry a job token only.
    """
    authorization = request.headers.get("authorization")
    from_query = False
    if (
        authorization is None
        and (query_token or job_query_token)
        and (given := request.query_params.get(ACCESS_TOKEN))
    ):
        authorization, from_query = f"Bearer {given}", True
    try:
        caller = await verifier.identify(authorization, job_token=job_token)
        if from_query and not query_token and caller.job_id is None:
            # A session token in a URL ends up in logs and histories: headers only here.
            raise AuthError("only a job token may be given as access_token on this route")
    except JobTokenOutOfScope as exc:
        raise Refusal(FORBIDDEN, str(exc)) from None
    except KeysUnavailable as exc:
        log.warning("token keys unavailable", extra={"reason": str(exc)})
        raise Refusal(
            UNAVAILABLE,
            "the token's signing keys cannot be fetched; retry later",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from None
    except AuthError as exc:
        # RFC 6750: name the error only when a token was presented.
        challenge = 'Bearer error="invalid_token"' if authorization else "Bearer"
        raise Refusal(UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": challenge}) from None
    request.state.user_id = caller.user_id
    return caller


async def authenticate(
    verifier: TokenVerifier, request: Request, *, query_token: bool = False
) -> str:
    """The caller's user id (see `identify`)."""
    return (await identify(verifier, request, query_token=query_token)).user_id


async def authorize_caller(
    verifier: TokenVerifier,
    rate: RequestRate | None,
    request: Request,
    *,
    query_token: bool = False,
    job_token: bool = False,
    job_query_token: bool = False,
) -> Caller:
    """The caller once its token is good (`401`) and opens this route (`403`), and its
    request rate allows one more (`429`, counted per replica, a job token's against its
    user), the first checks of every API route."""
    caller = await identify(
        verifier,
        request,
        query_token=query_token,
        job_token=job_token,
        job_query_token=job_query_token,
    )
    if rate is not None and not request.scope.get(RATE_COUNTED):
        rate.take(caller.user_id)
    return caller


async def authorize(
    verifier: TokenVerifier,
    rate: RequestRate | None,
    request: Request,
    *,
    query_token: bool = False,
) -> str:
    """The caller's user id (see `authorize_caller`)."""
    caller = await authorize_caller(verifier, rate, request, query_token=query_token)
    return caller.user_id


async def authorize_job_reader(
    verifier: TokenVerifier,
    rate: RequestRate | None,
    request: Request,
    *,
    query_token: bool = False,
) -> tuple[str, uuid.UUID | None]:
    """`authorize` for the routes reading the path's job, which a job token for that job opens
    too (in the header, or as `access_token`: on every such route for a job token, on the
    stream routes, `query_token`, for any): the caller's user id and the path's job id
    (`None`: not a job id, `404`). A job token for another job gets the answer an unknown job
    gets, `404`."""
    caller = await authorize_caller(
        verifier, rate, request, query_token=query_token, job_token=True, job_query_token=True
    )
    job_id = parse_job_id(request.path_params["job_id"])
    if caller.job_id is not None and caller.job_id != job_id:
        return caller.user_id, None
    return caller.user_id, job_id


def check_content_type(content_type: str | None) -> None:
    """`application/json`, with parameters allowed; a charset other than UTF-8 is refused,
    since JSON on the wire is UTF-8 (RFC 8259) and would be misread otherwise."""
    media_type, *parameters = (content_type or "").split(";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        raise Refusal(UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise Refusal(UNSUPPORTED_MEDIA_TYPE, "a JSON body must be UTF-8")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with `413` as soon as it is known to exceed `limit` bytes: from
    `Content-Length` before reading, or while reading a body sent without one."""
    body = await read_limited(request, limit)
    if body is None:
        raise Refusal(PAYLOAD_TOO_LARGE, f"the body must not exceed {limit} bytes")
    return body


def decode_json(body: bytes) -> object:
    try:
        return wire.decode_json(body)
    except msgspec.DecodeError as exc:
        raise Refusal(MALFORMED_JSON, f"the body is not valid JSON: {exc}") from None


async def json_body(request: Request, max_body_bytes: int) -> object:
    """Content type, size and JSON checks of a request with a body, in that order."""
    check_content_type(request.headers.get("content-type"))
    return decode_json(await read_body(request, max_body_bytes))


def etag_matches(if_none_match: str | None, tag: str) -> bool:
    """`If-None-Match` by weak comparison (RFC 9110 §13.1.2), `*` matching any job."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = tag.removeprefix("W/")
    return any(c.strip().removeprefix("W/") == opaque for c in if_none_match.split(","))


def parse_job_id(raw: str) -> uuid.UUID | None:
    """The job id of a path, only in the canonical 8-4-4-4-12 form `Location` hands out.

    Every `{job_id}` route goes through here. `fullmatch`, not `match` with `$`: `$` also
    matches before a trailing newline, and `/api/jobs/<id>%0A` reached `uuid.UUID` (a `500`).
    """
    return uuid.UUID(raw) if _UUID.fullmatch(raw) else None
