"""The OpenAPI operations of the spend routes: the job types with their prices (public) and the
caller's usage with this month's budget."""

from __future__ import annotations

from typing import Any

from jobs_proto.api import JobTypeList, UsageView
from jobs_proto.spend import MAX_USAGE_SPAN_DAYS

from .parts import AUTHENTICATED, JSON, SECURITY_SCHEME, problems, ref


def job_types_operation() -> dict[str, Any]:
    return {
        "summary": "The job types: input schema, price and most a job may cost (no token)",
        "operationId": "listJobTypes",
        "security": [],
        "parameters": [],
        "responses": {
            "200": {
                "description": (
                    "Every job type, by name. A job's `costUsd` = inputTokens * "
                    "perInputTokenUsd + outputTokens * perOutputTokenUsd + predictTimeS * "
                    "perPredictSecondUsd (a null price counts 0), rounded to 6 decimals; "
                    "admitting a job reserves its type's `maxCostUsd` against the budgets until "
                    "it ends."
                ),
                "content": {JSON: {"schema": ref(JobTypeList.__name__)}},
            },
            **problems({"500": "Unexpected error."}),
        },
    }


def _day(name: str, default: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"A UTC day, included; default {default}.",
        "schema": {"type": "string", "format": "date"},
    }


def usage_operation() -> dict[str, Any]:
    return {
        "summary": "The caller's spend over a span of days, and this month's budget",
        "operationId": "getUsage",
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [
            _day("from", "the first day of the current month"),
            _day("to", "the last day of the current month"),
        ],
        "responses": {
            "200": {
                "description": (
                    "The caller's usage: jobs count on the UTC day they were admitted, once "
                    "they ended (a running job's reservation shows in `budget.reservedUsd`). "
                    "`budget` is null when no monthly budget applies to the caller "
                    "(`USER_BUDGET_USD` or the token's budget claim)."
                ),
                "content": {JSON: {"schema": ref(UsageView.__name__)}},
            },
            **problems(
                {
                    "422": "`from` or `to` is not a date as YYYY-MM-DD, `from` is after `to`, or "
                    f"the span is over {MAX_USAGE_SPAN_DAYS} days; `errors` names the "
                    "`parameter`.",
                    **AUTHENTICATED,
                }
            ),
        },
    }
