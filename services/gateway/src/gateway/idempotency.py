"""Admitting a job once per `Idempotency-Key`: the key taken by compare-and-set with a new job
id, the job published, the first answer given again to the same request later; a request
meeting another still in progress waits for its outcome, or takes over an abandoned one."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from typing import Final

import msgspec

from jobs_proto.api import JobAccepted
from jobs_runtime.errors import Unavailable

from .admission import Admitted, publish_requested
from .budgets import BudgetGuard
from .ports import (
    Admission,
    Clock,
    EventBus,
    IdempotencyKeys,
    IdempotencyRecord,
    NewJobId,
    RequestedLog,
    Sleep,
)
from .validation import NewJob

# Rounds of reading a key and losing its compare-and-set (or waiting) before giving up;
# waiting for another request is bounded by `IdempotencyPolicy.wait_s` first.
_MAX_CAS_ROUNDS: Final = 1000


class KeyReused(Exception):
    """The key was first used with another request (`409`)."""


class KeyInProgress(Exception):
    """The first request with this key is still being admitted (`409`; retry shortly)."""


@dataclass(frozen=True, slots=True)
class IdempotencyPolicy:
    """How a request waits for another with the same key.

    A request that finds the key taken by one still `admitting` polls for its outcome for up
    to `wait_s` (the first answer is then replayed), else answers `409` (as the IETF
    Idempotency-Key draft does for a concurrent request). A record still `admitting` after
    `stale_s` was abandoned (its gateway died between taking the key and finishing; longer
    than any publish takes): the next request finishes it, with the job id it names.
    """

    wait_s: float = 5.0
    stale_s: float = 15.0
    poll_s: float = 0.05


def idempotency_slot(user_id: str, key: str) -> str:
    """Where a user's key is kept: a hash, so keys are per user, of any characters, and
    never readable from the store. The user id is length-prefixed: no (user, key) pair can
    run into another."""
    material = f"{len(user_id)}:{user_id}{key}".encode()
    return hashlib.sha256(material).hexdigest()


def request_fingerprint(route: str, body: object) -> str:
    """Identifies "the same body": the route and the JSON value sent, keys sorted, so the
    same object with other spacing or key order is the same request."""
    encoded = msgspec.json.encode([route, body], order="sorted")
    return hashlib.sha256(encoded).hexdigest()


def _reused() -> KeyReused:
    return KeyReused(
        "this Idempotency-Key was used with another request; use a new key for a new job"
    )


async def admit_job_once(
    user_id: str,
    slot: str,
    fingerprint: str,
    job: NewJob,
    bus: EventBus,
    keys: IdempotencyKeys,
    requested: RequestedLog,
    *,
    clock: Clock,
    new_id: NewJobId = uuid.uuid4,
    admission: Admission | None = None,
    budget: BudgetGuard | None = None,
    policy: IdempotencyPolicy = IdempotencyPolicy(),
    sleep: Sleep = asyncio.sleep,
) -> Admitted:
    """Admit a job under an `Idempotency-Key` (its `slot` and the request's `fingerprint`).

    The first request takes the key atomically with a new job id, publishes, and marks the
    key `admitted`; the same key and body afterwards answers that job again, another body
    `KeyReused`. A failed publish is not kept as an answer: the key goes `failed` and the
    next request publishes the same job id again, so an ambiguous failure (stored, but the
    acknowledgement lost) can never become two jobs. See `IdempotencyPolicy` for requests
    that meet one still in progress.
    """
    waited_s = 0.0
    for _ in range(_MAX_CAS_ROUNDS):
        stored = await keys.read(slot)
        if stored is None:
            record = IdempotencyRecord(
                fingerprint=fingerprint, job_id=new_id(), state="admitting", since=clock()
            )
            revision = await keys.create(slot, record)
            if revision is None:
                continue  # another request took the key in between: look at its record
            return await _finish(
                user_id, slot, record, revision, job, bus, keys, clock, admission, budget
            )
        record, revision = stored
        same = record.fingerprint == fingerprint
        if not same and record.state != "failed":
            raise _reused()
        if record.state == "admitted":
            return Admitted(JobAccepted(job_id=record.job_id), replayed=True)
        abandoned = (clock() - record.since).total_seconds() >= policy.stale_s
        if record.state == "failed" or abandoned:
            if await requested.find_requested(record.job_id) is not None:
                if not same:
                    raise _reused()
                # Published before its request gave up: it is the answer.
                admitted = msgspec.structs.replace(record, state="admitted")
                with contextlib.suppress(Unavailable):
                    await keys.update(slot, admitted, revision)
                return Admitted(JobAccepted(job_id=record.job_id), replayed=True)
            # Nothing was published under the key, so no answer was given: the key is free
            # for this request, even with another body (which then needs its own job id).
            taken = IdempotencyRecord(
                fingerprint=fingerprint,
                job_id=record.job_id if same else new_id(),
                state="admitting",
                since=clock(),
            )
            new_revision = await keys.update(slot, taken, revision)
            if new_revision is None:
                continue  # another request took it over first
            return await _finish(
                user_id, slot, taken, new_revision, job, bus, keys, clock, admission, budget
            )
        if waited_s >= policy.wait_s:
            raise KeyInProgress(
                "a request with this Idempotency-Key is still being admitted; retry shortly"
            )
        await sleep(policy.poll_s)
        waited_s += policy.poll_s
    # Only reached when other requests keep winning every compare-and-set on this key.
    raise KeyInProgress("requests with this Idempotency-Key keep colliding; retry shortly")


async def _finish(
    user_id: str,
    slot: str,
    record: IdempotencyRecord,
    revision: int,
    job: NewJob,
    bus: EventBus,
    keys: IdempotencyKeys,
    clock: Clock,
    admission: Admission | None,
    budget: BudgetGuard | None,
) -> Admitted:
    """Publish the job of a key this request holds and record the outcome."""
    try:
        accepted = await publish_requested(
            user_id, job, record.job_id, bus, clock, admission, budget
        )
    except BaseException:
        # Not an answer to keep: the next request with the key takes it over at once.
        with contextlib.suppress(Unavailable):
            await keys.update(slot, msgspec.structs.replace(record, state="failed"), revision)
        raise
    # The job is admitted whatever happens next; a record left `admitting` is finished by
    # the next request with the key once it is stale (the job is then found in the stream).
    with contextlib.suppress(Unavailable):
        await keys.update(slot, msgspec.structs.replace(record, state="admitted"), revision)
    return Admitted(accepted)
