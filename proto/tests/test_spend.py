"""The cost rule is exact: prices in decimals, money in integer micro-dollars, half-up rounding."""

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from jobs_proto.api import UsageView
from jobs_proto.events import JobCompleted, JobRequested, decode_event
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.replicate import ReplicatePrediction, completed_event
from jobs_proto.spend import (
    Metrics,
    Price,
    cost_micros,
    micros_to_usd,
    month_start,
    usd_to_micros,
)

AT = datetime(2026, 12, 7, tzinfo=UTC)
GEMINI = Price(per_input_token_usd=Decimal("0.000002"), per_output_token_usd=Decimal("0.000012"))


def test_tokens_times_prices_in_micro_dollars() -> None:
    assert cost_micros(Metrics(input_tokens=700, output_tokens=1024), GEMINI) == 1400 + 12288


def test_a_null_price_counts_zero_and_missing_metrics_cost_nothing() -> None:
    assert cost_micros(Metrics(predict_time_s=12.5, output_tokens=3), GEMINI) == 36
    assert cost_micros(Metrics(), GEMINI) == 0
    per_second = Price(per_predict_second_usd=Decimal("0.001400"))
    assert cost_micros(Metrics(predict_time_s=12.5, input_tokens=9), per_second) == 17500


def test_rounding_is_half_up_at_six_decimals() -> None:
    tiny = Price(per_output_token_usd=Decimal("0.00000005"))  # $0.05 per million
    assert cost_micros(Metrics(output_tokens=9), tiny) == 0  # 0.45 µ$
    assert cost_micros(Metrics(output_tokens=10), tiny) == 1  # 0.5 µ$ rounds up
    assert cost_micros(Metrics(output_tokens=29), tiny) == 1  # 1.45 µ$


def test_a_float_predict_time_is_taken_at_its_shortest_decimal() -> None:
    # 0.1 + 0.2 as floats is 0.30000000000000004; the per-second price must not see the tail.
    price = Price(per_predict_second_usd=Decimal("0.0000025"))
    assert cost_micros(Metrics(predict_time_s=0.3), price) == 1  # 0.75 µ$ → 1
    assert cost_micros(Metrics(predict_time_s=0.1), price) == 0  # 0.25 µ$


@given(st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=50))
def test_sums_of_costs_are_exact(outputs: list[int]) -> None:
    costs = [cost_micros(Metrics(output_tokens=n), GEMINI) for n in outputs]
    assert sum(costs) == 12 * sum(outputs)


def test_dollars_and_micro_dollars() -> None:
    assert usd_to_micros(Decimal("0.11")) == 110_000
    assert usd_to_micros(2.5) == 2_500_000
    assert usd_to_micros(0.0000005) == 1
    assert micros_to_usd(110_000) == 0.11
    assert micros_to_usd(1) == 0.000001
    assert month_start(date(2026, 12, 31)) == date(2026, 12, 1)


# The longest input each type accepts (its schema's bounds).
LONGEST_INPUTS = {
    "script_generation": {
        "topic": "x" * 2000,
        "tone": "x" * 200,
        "audience": "x" * 200,
        "duration_minutes": 120,
    },
    "video_outline": {"topic": "x" * 2000, "sections": 30},
    "title_generation": {"topic": "x" * 2000, "count": 50},
}


def test_every_types_max_cost_covers_its_worst_job() -> None:
    # The most input a job can bring is its prompt and instruction, at most a token per
    # character; the most output its `max_output_tokens`. A reservation below that could be
    # passed by the job's real cost.
    assert set(LONGEST_INPUTS) == set(JOB_TYPES)
    for name, job_type in JOB_TYPES.items():
        job_input = job_type.parse_input(LONGEST_INPUTS[name])
        prompt = job_type.model_input(job_input)["prompt"]
        worst = Metrics(
            input_tokens=len(prompt) + len(job_type.system_instruction),
            output_tokens=job_type.max_output_tokens,
        )
        assert cost_micros(worst, job_type.price) <= usd_to_micros(job_type.max_cost_usd), name


def test_token_counts_come_from_the_predictions_metrics() -> None:
    prediction = msgspec.convert(
        {
            "id": "p1",
            "status": "succeeded",
            "metrics": {"predict_time": 4.25, "input_token_count": 31, "output_token_count": 812},
        },
        ReplicatePrediction,
    )
    event = completed_event(prediction, uuid.uuid4(), AT, output="text")
    assert isinstance(event, JobCompleted)
    assert (event.predict_time_s, event.input_tokens, event.output_tokens) == (4.25, 31, 812)


def test_a_count_that_is_not_a_count_is_no_count() -> None:
    for bad in (-1, 1.5, "7", True, None):
        prediction = msgspec.convert(
            {"id": "p1", "status": "succeeded", "metrics": {"output_token_count": bad}},
            ReplicatePrediction,
        )
        assert prediction.output_tokens is None


def test_a_requested_event_carries_its_price_exactly() -> None:
    event = JobRequested(
        job_id=uuid.uuid4(),
        occurred_at=AT,
        user_id="u",
        job_type="title_generation",
        input={"topic": "x"},
        price=GEMINI,
        reserved_micros=20_000,
    )
    decoded = decode_event(msgspec.json.encode(event))
    assert isinstance(decoded, JobRequested)
    assert decoded.price == GEMINI
    assert decoded.reserved_micros == 20_000


def test_usage_names_its_first_day_from() -> None:
    body = msgspec.json.encode(
        UsageView(
            from_=date(2026, 12, 1),
            to=date(2026, 12, 31),
            jobs=0,
            cost_usd=0.0,
            by_type={},
            by_day={},
            budget=None,
        )
    )
    assert body.startswith(b'{"from":"2026-12-01","to":"2026-12-31"')
