"""The job types as `GET /api/job-types` shows them (`JobTypeList`), so a page can build a
form from each type's input schema and show its price before anything is submitted. Built from
proto's `JOB_TYPES` alone, so it never differs from what admission validates and charges."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec

from jobs_proto.api import JobTypeList, JobTypeView, PriceView
from jobs_proto.job_types import JOB_TYPES, JobType
from jobs_proto.spend import Price

_LOCAL_REF = "#/$defs/{name}"


def input_schema(job_type: JobType) -> dict[str, Any]:
    """msgspec's JSON Schema of the type's input, the input's own object at the top (any
    type it refers to under `$defs`), so the schema stands alone."""
    name = job_type.input_type.__name__
    _, defs = msgspec.json.schema_components([job_type.input_type], ref_template=_LOCAL_REF)
    schema: dict[str, Any] = dict(defs.pop(name))
    if defs:
        schema["$defs"] = defs
    return schema


def _usd(price: Decimal | None) -> float | None:
    return None if price is None else float(price)


def price_view(price: Price) -> PriceView:
    return PriceView(
        per_input_token_usd=_usd(price.per_input_token_usd),
        per_output_token_usd=_usd(price.per_output_token_usd),
        per_predict_second_usd=_usd(price.per_predict_second_usd),
    )


def job_type_list(job_types: Mapping[str, JobType] = JOB_TYPES) -> JobTypeList:
    """Every type, by name."""
    return JobTypeList(
        items=[
            JobTypeView(
                type=name,
                model=t.model,
                streams=t.streams,
                deadline_s=t.deadline_s,
                input_schema=input_schema(t),
                price=price_view(t.price),
                max_cost_usd=float(t.max_cost_usd),
            )
            for name, t in sorted(job_types.items())
        ]
    )
