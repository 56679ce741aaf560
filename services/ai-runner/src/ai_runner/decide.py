"""What a delivery of a requested job does, given the job's claim as read: a pure function in the
shape of the job-store's `transition`, so the claim loop only performs the decision's I/O.

The rows, in the order they are tried (the claim's facts only accumulate, so the first that
holds wins): no claim and time left creates; a canceled job does nothing; a failed job repeats
its failure; a recorded prediction is announced again; a create that may have made a
prediction looks in the job's events, adopts what they name, or waits out the binding window;
past the job's deadline the job fails; otherwise this runner creates (again).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec

from ai_runner.ports import Claim
from jobs_proto.events import JobError


class Looked(enum.Enum):
    """`decide`'s `found` before the job's events were read."""

    NOT_YET = enum.auto()


NOT_LOOKED: Final = Looked.NOT_YET


@dataclass(frozen=True, slots=True)
class Create:
    """Take the create: write the claim `creating` makes and create the prediction.
    `waited_s`: how long an earlier create stayed unanswered (None: there was none)."""

    waited_s: float | None = None


@dataclass(frozen=True, slots=True)
class NothingToDo:
    """The job was canceled before its prediction was created."""


@dataclass(frozen=True, slots=True)
class RepeatFailure:
    """The job failed for good already: say so again."""

    error: JobError


@dataclass(frozen=True, slots=True)
class Announce:
    """The job's prediction is recorded: announce it again."""

    prediction_id: str


@dataclass(frozen=True, slots=True)
class LookForPrediction:
    """A create may have made a prediction: read the job's events and decide again."""


@dataclass(frozen=True, slots=True)
class Adopt:
    """The job's events name the prediction of a create whose answer was lost: keep it."""

    prediction_id: str


@dataclass(frozen=True, slots=True)
class Wait:
    """A create may be in flight: look again within `remaining_s` of the binding window."""

    remaining_s: float


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    """The job waited past its deadline before its prediction could be created: it fails."""


Decision = (
    Create
    | NothingToDo
    | RepeatFailure
    | Announce
    | LookForPrediction
    | Adopt
    | Wait
    | DeadlinePassed
)


def decide(
    claim: Claim | None,
    now: datetime,
    *,
    deadline_at: datetime,
    binding_wait_s: float,
    found: str | Looked | None = NOT_LOOKED,
) -> Decision:
    """The decision for a requested job whose claim is `claim` (None: no runner claimed it) at
    `now`; `found`: the prediction the job's events name, once `LookForPrediction` was asked."""
    time_left = now < deadline_at
    if claim is None:
        return Create() if time_left else DeadlinePassed()
    if claim.canceled:
        return NothingToDo()
    if claim.failed is not None:
        return RepeatFailure(claim.failed)
    if claim.prediction_id is not None:
        return Announce(claim.prediction_id)
    waited_s = None
    if claim.creating_since is not None:
        if found is NOT_LOOKED:
            return LookForPrediction()
        if isinstance(found, str):
            return Adopt(found)
        waited_s = (now - claim.creating_since).total_seconds()
        if waited_s < binding_wait_s:
            return Wait(binding_wait_s - waited_s)
    return Create(waited_s) if time_left else DeadlinePassed()


def creating(claim: Claim | None, now: datetime, job_type: str) -> Claim:
    """The claim that says this runner is creating the job's prediction since `now`: anyone
    else now sees the create in flight and waits."""
    return msgspec.structs.replace(claim or Claim(), creating_since=now, job_type=job_type)
