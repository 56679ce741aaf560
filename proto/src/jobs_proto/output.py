"""A prediction's output text as an append-only log of chunks, each placed by its offset.

The ai-runner's relay (from the prediction's own stream) and webhook-ingest (from `output`
webhooks) both append to it; the gateway's `/output` route reads it. Offsets count Unicode code
points, as the API's `id:` does, so a chunk says exactly which characters it holds and any
reader or writer can drop what it already has: delivery is exactly once per offset however
often a writer reconnects, restarts or races another.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Final

import msgspec

from jobs_proto.base import Message
from jobs_proto.stream import DAY_S, DEV_CAPACITY, StreamSpec
from jobs_proto.subjects import Subjects
from jobs_proto.wire import decode_json

# A chunk's text at most: 16k code points are at most 64 KiB of UTF-8, well inside the stream's
# message size, and a reader that resumes mid-answer skips little.
MAX_CHUNK_CHARS: Final = 16 * 1024
# The margin kept after the longest deadline: a job's text is read from the log while it runs,
# and from its stored `output` once it has ended.
OUTPUT_RETENTION_MARGIN_S: Final = 3600.0
OUTPUT_MAX_MESSAGE_BYTES: Final = 256 * 1024


class OutputChunk(Message, frozen=True):
    """Characters `[offset, offset + len(text))` of one prediction's output."""

    offset: int
    text: str

    @property
    def end(self) -> int:
        return self.offset + len(self.text)


class OutputWanted(Message, frozen=True):
    """A gateway has a client reading this running job's text (`/output`, `/events`): sent
    when the client starts and again every `OUTPUT_WANTED_EVERY_S` while it reads, so a relay
    that restarted, or took the job over, learns it too."""

    job_id: uuid.UUID
    prediction_id: str


OUTPUT_WANTED_EVERY_S: Final = 5.0


class OutputGap(Exception):
    """A chunk starts past what the reader or writer holds: something between is missing."""


def beyond(offset: int, text: str, held: int) -> str:
    """What of `text` (starting at `offset`) lies past the first `held` characters: "" when all
    of it is already held. Raises `OutputGap` when `text` starts after `held`."""
    if offset > held:
        raise OutputGap(f"text starts at {offset}, only {held} characters are held")
    return text[held - offset :] if offset + len(text) > held else ""


def pieces(offset: int, text: str, max_chars: int = MAX_CHUNK_CHARS) -> Iterator[OutputChunk]:
    """`text` (starting at `offset`) as chunks of at most `max_chars` characters."""
    for start in range(0, len(text), max_chars):
        yield OutputChunk(offset=offset + start, text=text[start : start + max_chars])


def chunk_message_id(prediction_id: str, offset: int) -> str:
    """The `Nats-Msg-Id` of a chunk: a writer retrying the same offset stores it once."""
    return f"output:{prediction_id}:{offset}"


def output_stream(
    subjects: Subjects,
    jobs_stream: str,
    *,
    longest_deadline_s: float,
    replicas: int = 1,
    max_bytes: int = DEV_CAPACITY.output_stream_max_bytes,
) -> StreamSpec:
    """The log of every running prediction's text, beside `jobs_stream`; kept for the longest
    job's life plus a margin (afterwards `/output` serves the stored `output`)."""
    return StreamSpec(
        name=f"{jobs_stream}_OUTPUT",
        subjects=(subjects.all_output,),
        max_age_s=min(DAY_S, longest_deadline_s + OUTPUT_RETENTION_MARGIN_S),
        duplicate_window_s=10 * 60.0,
        replicas=replicas,
        max_msg_size=OUTPUT_MAX_MESSAGE_BYTES,
        max_bytes=max_bytes,
        # The log of every job together, whatever its rate of writing: full, old chunks go
        # first (a finished job's text is served from its stored `output` by then).
        discard="old",
        allow_direct=True,
    )


_encoder: Final = msgspec.json.Encoder()
_decoder: Final[msgspec.json.Decoder[OutputChunk]] = msgspec.json.Decoder(OutputChunk)


_wanted_decoder: Final[msgspec.json.Decoder[OutputWanted]] = msgspec.json.Decoder(OutputWanted)


def encode_wanted(wanted: OutputWanted) -> bytes:
    return _encoder.encode(wanted)


def decode_wanted(data: bytes) -> OutputWanted:
    """Raises `msgspec.DecodeError` for a body that is not an `OutputWanted`."""
    return decode_json(data, _wanted_decoder)


def encode_chunk(chunk: OutputChunk) -> bytes:
    return _encoder.encode(chunk)


def decode_chunk(data: bytes) -> OutputChunk:
    """Raises `msgspec.DecodeError` for a body that is not a chunk."""
    return decode_json(data, _decoder)
