"""The spend routes: `GET /api/job-types` (public: a page shows a type's input form and price
before the user has a token) and `GET /api/usage` (the caller's spend over a span of days and
this month's budget). Each only turns the request into a handler's message and the outcome into
an answer."""

from __future__ import annotations

from datetime import UTC
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway import handlers
from gateway.catalog import job_type_list

from .checks import JSON_MEDIA_TYPE, authorize_caller, json_response
from .ports import GatewayPorts
from .problems import Endpoint, refuse

# The types and prices change only with a release; a minute keeps a page's repeated loads
# off the gateway without hiding a new price for long.
JOB_TYPES_CACHE_CONTROL: Final = "public, max-age=60"


def job_types() -> Endpoint:
    """Built and encoded once: it depends on the code alone."""
    body = msgspec.json.encode(job_type_list())

    async def job_types(request: Request) -> Response:
        return Response(
            body,
            media_type=JSON_MEDIA_TYPE,
            headers={"Cache-Control": JOB_TYPES_CACHE_CONTROL},
        )

    return job_types


def usage(ports: GatewayPorts) -> Endpoint:
    async def usage(request: Request) -> Response:
        caller = await authorize_caller(ports.verifier, ports.rate, request)
        today = ports.clock().astimezone(UTC).date()
        first, last = handlers.parse_usage_span(request.query_params.multi_items(), today)
        message = handlers.ReadUsage(caller.user_id, first, last, caller.budget_micros)
        outcome = await handlers.usage(message, ports.deps)
        if isinstance(outcome, handlers.Refused):
            raise refuse(outcome)
        # Per user, and changes with every job of theirs that ends.
        return json_response(outcome, headers={"Cache-Control": "private, no-store"})

    return usage
