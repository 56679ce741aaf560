"""A job's messages in the jobs stream, and what only their whole bodies tell (shown bodies are
cut short): the owner and the predictions."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from jobs_ops.reports import StreamEvent
from jobs_proto.events import JobRequested, JobSubmitted, decode_event


@dataclass
class JobInStream:
    """A job's messages in the jobs stream, and what only their whole bodies tell: the owner
    its `requested` event names, and the predictions its `submitted` events name."""

    events: list[StreamEvent] = field(default_factory=list)
    owner: str | None = None
    prediction_ids: list[str] = field(default_factory=list)

    def note(self, body: bytes) -> None:
        try:
            event = decode_event(body)
        except msgspec.DecodeError:
            return  # a newer release's kind, or garbage: shown, not understood
        if isinstance(event, JobRequested) and self.owner is None:
            self.owner = event.user_id
        elif isinstance(event, JobSubmitted):
            self.prediction_ids.append(event.prediction_id)
