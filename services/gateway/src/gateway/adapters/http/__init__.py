"""The gateway's HTTP API: `app` (the route table), `checks` (token, rate, content type, size,
JSON, in the contract's order), `jobs` and `events` (the routes, translating requests into the
handlers' messages and their outcomes into answers), `problems` (refusals as RFC 9457 problems,
one log line per request), `site` (OpenAPI, docs, demo) and `ports` (what it is built over)."""

from .app import IDEATION_ROUTES, build_app
from .checks import Refusal, check_content_type, decode_json, etag, etag_matches, parse_job_id
from .ports import GatewayPorts

__all__ = [
    "IDEATION_ROUTES",
    "GatewayPorts",
    "Refusal",
    "build_app",
    "check_content_type",
    "decode_json",
    "etag",
    "etag_matches",
    "parse_job_id",
]
