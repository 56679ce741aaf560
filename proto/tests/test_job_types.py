import dataclasses
from typing import Any

import msgspec
import pytest

from jobs_proto.job_types import (
    JOB_TYPES,
    NON_STREAMING_EVENTS,
    STREAMING_EVENTS,
    ScriptGenerationInput,
    TitleGenerationInput,
)


def test_the_three_contract_types_run_gemini() -> None:
    assert set(JOB_TYPES) == {"script_generation", "video_outline", "title_generation"}
    for job_type in JOB_TYPES.values():
        assert job_type.model == "google/gemini-3-pro"
        assert {"start", "completed"} <= set(job_type.webhook_events)
        assert job_type.deadline_s >= 5  # Replicate's Cancel-After minimum


@pytest.mark.parametrize("name", sorted(JOB_TYPES))
def test_only_types_whose_model_does_not_stream_ask_for_output_webhooks(name: str) -> None:
    # The relay carries a streaming model's text and progress: `output` webhooks, the whole
    # text every 500 ms per prediction, would only load webhook-ingest.
    job_type = JOB_TYPES[name]
    assert job_type.streams
    assert job_type.webhook_events == ("start", "completed")
    quiet = dataclasses.replace(job_type, streams=False)
    assert quiet.webhook_events == ("start", "output", "completed")


def test_the_two_event_lists_differ_only_in_output() -> None:
    assert set(NON_STREAMING_EVENTS) - set(STREAMING_EVENTS) == {"output"}
    assert set(STREAMING_EVENTS) < set(NON_STREAMING_EVENTS)


@pytest.mark.parametrize("name", sorted(JOB_TYPES))
@pytest.mark.parametrize("body", [{}, {"topic": ""}, {"topic": "   "}, {"topic": 7}])
def test_missing_or_empty_topic_names_the_field(name: str, body: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.topic|`topic`"):
        JOB_TYPES[name].parse_input(body)


def test_input_becomes_the_models_prompt() -> None:
    script = JOB_TYPES["script_generation"]
    parsed = script.parse_input({"topic": "tides", "durationMinutes": 5, "extra": "ignored"})
    assert parsed == ScriptGenerationInput(topic="tides", duration_minutes=5)
    model_input = script.model_input(parsed)
    assert "tides" in model_input["prompt"]
    assert "5 minutes" in model_input["prompt"]
    assert model_input["max_output_tokens"] == script.max_output_tokens


def test_title_count_defaults_and_is_bounded() -> None:
    titles = JOB_TYPES["title_generation"]
    assert titles.parse_input({"topic": "tides"}) == TitleGenerationInput(topic="tides", count=10)
    with pytest.raises(msgspec.ValidationError, match="count"):
        titles.parse_input({"topic": "tides", "count": 0})
