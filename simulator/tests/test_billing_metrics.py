"""What a language model's prediction is billed on: `metrics` token counts and predict time that
agree with the text it wrote, its input (prompt and system instruction) and its token limit."""

from __future__ import annotations

from typing import Any

import pytest

from jobs_proto.job_types import JOB_TYPES, TitleGenerationInput
from jobs_testkit.waiting import eventually
from replicate_sim.model import Prediction, chunks_at, render
from replicate_sim.outputs import (
    count_tokens,
    input_tokens,
    max_output_tokens,
    output_chunks,
    token_counts,
)

from .calls import CREATE, final, get
from .conftest import RunningSimulator

T0 = 1_800_000_000.0
PROMPT = "Suggest 3 video titles, one per line, about: tides."
SYSTEM = "You write short, specific, honest video titles."


def text(chunks: list[str]) -> str:
    return "".join(chunks)


def prediction(model_input: dict[str, Any], **changes: object) -> Prediction:
    fields: dict[str, object] = {
        "id": "p1",
        "seq": 1,
        "model": "google/gemini-3-pro",
        "version": "hidden",
        "input": model_input,
        "webhook": None,
        "events": frozenset({"completed"}),
        "job": None,
        "created_at": T0,
        "start_at": T0 + 1,
        "end_at": T0 + 101,
        "outcome": "succeeded",
        "aborts": False,
        "chunks": output_chunks(model_input),
        "base_url": "http://sim",
        "streams": True,
        "tokens_per_s": 4.0,
        "input_tokens": input_tokens(model_input),
    }
    fields.update(changes)
    return Prediction(**fields)  # type: ignore[arg-type]


# The input ------------------------------------------------------------------------------------


def test_the_input_count_is_the_prompt_and_the_system_instruction() -> None:
    assert count_tokens(PROMPT) == 9
    assert count_tokens(SYSTEM) == 7
    assert input_tokens({"prompt": PROMPT}) == 9
    assert input_tokens({"prompt": PROMPT, "system_instruction": SYSTEM}) == 16
    # Claude's and Llama's name for it.
    assert input_tokens({"prompt": PROMPT, "system_prompt": SYSTEM}) == 16
    # The whole prompt is read, not the 500 characters the answer quotes.
    long = "word " * 400
    assert input_tokens({"prompt": long}) == 400


def test_a_job_types_input_counts_what_the_ai_runner_sends() -> None:
    job_type = JOB_TYPES["title_generation"]
    model_input = job_type.model_input(TitleGenerationInput(topic="tides", count=3))
    expected = count_tokens(model_input["prompt"]) + count_tokens(job_type.system_instruction)
    assert input_tokens(model_input) == expected
    assert max_output_tokens(model_input) == job_type.max_output_tokens


# The limit ------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 5, 17, 40, 90])
def test_the_text_stops_at_max_output_tokens(limit: int) -> None:
    whole = output_chunks({"prompt": PROMPT})
    cut = output_chunks({"prompt": PROMPT, "max_output_tokens": limit})
    assert count_tokens(text(whole)) > 90
    assert count_tokens(text(cut)) == limit
    assert text(whole).startswith(text(cut))
    assert token_counts(cut)[-1] == limit


@pytest.mark.parametrize("value", [None, 0, -3, "12", 2.5, True, 100_000])
def test_no_usable_limit_leaves_the_text_whole(value: object) -> None:
    whole = output_chunks({"prompt": PROMPT})
    assert output_chunks({"prompt": PROMPT, "max_output_tokens": value}) == whole


def test_other_models_limit_fields_are_respected_too() -> None:
    assert max_output_tokens({"max_tokens": 12}) == 12
    assert max_output_tokens({"max_completion_tokens": 7}) == 7
    assert max_output_tokens({"max_output_tokens": 5, "max_tokens": 12}) == 5


# The metrics ------------------------------------------------------------------------------------


def test_a_finished_prediction_reports_what_it_wrote_up_to_its_limit() -> None:
    model_input = {"prompt": PROMPT, "system_instruction": SYSTEM, "max_output_tokens": 30}
    p = prediction(model_input)
    body = render(p, T0 + 101)
    metrics = body["metrics"]
    assert body["status"] == "succeeded"
    assert metrics["input_token_count"] == 16
    assert metrics["output_token_count"] == 30 == count_tokens(text(body["output"]))
    assert metrics["predict_time"] == 100.0
    assert metrics["total_time"] == 101.0


def test_a_canceled_prediction_reports_the_partial_text_it_wrote() -> None:
    model_input = {"prompt": PROMPT, "system_instruction": SYSTEM}
    # Four tokens a second from T0 + 1, canceled 5.5 s in: 22 tokens written.
    p = prediction(model_input, canceled_at=T0 + 6.5)
    body = render(p, T0 + 6.5)
    assert body["status"] == "canceled"
    written = text(body["output"])
    assert body["metrics"]["output_token_count"] == 22 == count_tokens(written)
    assert body["metrics"]["predict_time"] == 5.5
    assert text(output_chunks(model_input)).startswith(written)
    # Later reads show the same bill.
    assert render(p, T0 + 500)["metrics"] == body["metrics"]
    assert chunks_at(p, T0 + 500) == body["output"]


# Over HTTP ------------------------------------------------------------------------------------


async def test_a_prediction_canceled_over_http_bills_the_text_its_reader_saw(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=30, tokensPerS=40)
    model_input = {"prompt": PROMPT, "system_instruction": SYSTEM, "max_output_tokens": 4096}
    response = await simulator.http.post(CREATE, json={"input": model_input})
    assert response.status_code == 201, response.text
    created = response.json()

    async def some_text() -> bool:
        return bool((await get(simulator, created["id"]))["output"])

    await eventually(some_text, what="some text written")
    canceled = await simulator.http.post(f"/v1/predictions/{created['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    ended = await final(simulator, created["id"])
    assert ended["status"] == "canceled"
    metrics = ended["metrics"]
    assert metrics["input_token_count"] == 16
    assert 0 < metrics["output_token_count"] == count_tokens(text(ended["output"]))
    assert metrics["output_token_count"] < count_tokens(text(output_chunks(model_input)))
    assert metrics["predict_time"] > 0


async def test_a_limited_prediction_over_http_stops_at_its_limit(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=0.2, tokensPerS=1000)
    model_input = {"prompt": PROMPT, "max_output_tokens": 25}
    response = await simulator.http.post(CREATE, json={"input": model_input})
    assert response.status_code == 201, response.text
    ended = await final(simulator, response.json()["id"])
    assert ended["status"] == "succeeded"
    assert ended["metrics"]["output_token_count"] == 25 == count_tokens(text(ended["output"]))
