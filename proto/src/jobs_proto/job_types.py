"""The job-type registry: which model each job type runs, its input, its prompt and its deadline.

Adding a job type is adding an entry here; the gateway validates against `input_type`, the
ai-runner sends `model_input(...)` to `model` with the webhook events its type asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal

import msgspec

from jobs_proto.base import Message
from jobs_proto.spend import Price

WebhookEvent = Literal["start", "output", "logs", "completed"]

# A topic must hold at least one visible character: "" and "   " are both a missing topic.
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=r"\S")]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]


class ScriptGenerationInput(Message, frozen=True):
    """Input of `script_generation`: a video script about a topic."""

    topic: Topic
    tone: ShortText | None = None
    audience: ShortText | None = None
    duration_minutes: Annotated[int, msgspec.Meta(ge=1, le=120)] | None = None


class VideoOutlineInput(Message, frozen=True):
    """Input of `video_outline`: a sectioned outline of a video about a topic."""

    topic: Topic
    sections: Annotated[int, msgspec.Meta(ge=1, le=30)] | None = None


class TitleGenerationInput(Message, frozen=True):
    """Input of `title_generation`: candidate titles for a video about a topic."""

    topic: Topic
    count: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10


def _script_prompt(job: ScriptGenerationInput) -> str:
    extras = [
        f"Tone: {job.tone}." if job.tone else "",
        f"Audience: {job.audience}." if job.audience else "",
        f"Length: about {job.duration_minutes} minutes spoken." if job.duration_minutes else "",
    ]
    details = " ".join(e for e in extras if e)
    return f"Write a complete video script about: {job.topic}. {details}".strip()


def _outline_prompt(job: VideoOutlineInput) -> str:
    sections = f" in {job.sections} sections" if job.sections else ""
    return f"Write a video outline{sections} about: {job.topic}."


def _titles_prompt(job: TitleGenerationInput) -> str:
    return f"Suggest {job.count} video titles, one per line, about: {job.topic}."


@dataclass(frozen=True, slots=True)
class JobType:
    """One kind of job: a model, the input it accepts and how that input becomes a prompt."""

    name: str
    model: str
    input_type: type[Message]
    prompt: Callable[[Any], str]
    system_instruction: str
    deadline_s: int
    # What its model costs at Replicate, and the most one job may cost: admission reserves
    # `max_cost_usd` against the user's budget, the job's end settles it to the real cost.
    price: Price
    max_cost_usd: Decimal
    max_output_tokens: int = 8192
    # Whether the model writes its text to `urls.stream` as it goes (Replicate's language
    # models do): the ai-runner relays it; otherwise the text comes from `output` webhooks.
    streams: bool = True

    @property
    def webhook_events(self) -> tuple[WebhookEvent, ...]:
        """The events asked of Replicate, one rule for every type: a streaming model's text
        comes through the relay (which also sends its progress), so its `output` webhooks,
        one every 500 ms per prediction with the whole text so far, would only load the
        system; a model that does not stream gets its text from them."""
        return STREAMING_EVENTS if self.streams else NON_STREAMING_EVENTS

    def parse_input(self, raw: Mapping[str, Any]) -> Message:
        """Validate a request's input; raises `msgspec.ValidationError` naming the bad field."""
        return msgspec.convert(raw, self.input_type)

    def model_input(self, job_input: Message) -> dict[str, Any]:
        """The prediction input Replicate's model expects for this job."""
        return {
            "prompt": self.prompt(job_input),
            "system_instruction": self.system_instruction,
            "max_output_tokens": self.max_output_tokens,
            "temperature": 0.7,
        }


STREAMING_EVENTS: Final[tuple[WebhookEvent, ...]] = ("start", "completed")
NON_STREAMING_EVENTS: Final[tuple[WebhookEvent, ...]] = ("start", "output", "completed")
_GEMINI: Final = "google/gemini-3-pro"
# EXAMPLE PRICES, TO REPLACE with the ones on the model's Replicate page before anyone is billed
# by them (README, "Prices and budgets"): Gemini 3 Pro's published rate, $2 per million input
# tokens and $12 per million output tokens, no per-second charge.
_GEMINI_PRICE: Final = Price(
    per_input_token_usd=Decimal("0.000002"), per_output_token_usd=Decimal("0.000012")
)

JOB_TYPES: Final[Mapping[str, JobType]] = MappingProxyType(
    {
        t.name: t
        for t in (
            JobType(
                name="script_generation",
                model=_GEMINI,
                input_type=ScriptGenerationInput,
                prompt=_script_prompt,
                system_instruction="You write engaging, well-structured video scripts.",
                deadline_s=600,
                price=_GEMINI_PRICE,
                max_cost_usd=Decimal("0.11"),
            ),
            JobType(
                name="video_outline",
                model=_GEMINI,
                input_type=VideoOutlineInput,
                prompt=_outline_prompt,
                system_instruction="You plan clear, well-paced video outlines.",
                deadline_s=300,
                price=_GEMINI_PRICE,
                max_cost_usd=Decimal("0.11"),
            ),
            JobType(
                name="title_generation",
                model=_GEMINI,
                input_type=TitleGenerationInput,
                prompt=_titles_prompt,
                system_instruction="You write short, specific, honest video titles.",
                deadline_s=180,
                price=_GEMINI_PRICE,
                max_cost_usd=Decimal("0.02"),
                max_output_tokens=1024,
            ),
        )
    }
)

LONGEST_DEADLINE_S: Final = max(t.deadline_s for t in JOB_TYPES.values())
