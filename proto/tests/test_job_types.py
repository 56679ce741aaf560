from typing import Any

import msgspec
import pytest

from jobs_proto.job_types import JOB_TYPES, ScriptGenerationInput, TitleGenerationInput


def test_the_three_contract_types_run_gemini() -> None:
    assert set(JOB_TYPES) == {"script_generation", "video_outline", "title_generation"}
    for job_type in JOB_TYPES.values():
        assert job_type.model == "google/gemini-3-pro"
        assert {"start", "completed"} <= set(job_type.webhook_events)
        assert job_type.deadline_s >= 5  # Replicate's Cancel-After minimum


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
