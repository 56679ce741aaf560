"""Properties of the store under redelivery and reordering, through real Postgres.

Hypothesis generates how a job's events reach the consumer (duplicated, reordered, some before
the job's request) and the test applies them with `apply_event` as the consumer would, handing
an event that raises `JobNotYetKnown` back until the request is in. The end state is checked
twice: against the pure `transition` applied in order, and against a table written out from
the contract (`ENDS`), which shares no code with the store.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from job_store.adapters.postgres import PostgresJobStore
from job_store.batches import JobNotYetKnown, apply_event
from job_store.model import HistoryEntry, JobRow
from job_store.transitions import Change, transition
from jobs_proto.events import AnyJobEvent, JobCancelRequested, JobStarted, JobSubmitted
from jobs_proto.status import is_terminal
from jobs_testkit.events import cancel, completed, failed, requested, started, submitted

from ..fakes import RecordingAnnouncer

# The ways a job's life can go: every fact once, in the order they happened. The first event
# is always the request and the last ends the job.
Story = Callable[[uuid.UUID], list[AnyJobEvent]]
STORIES: list[Story] = [
    lambda j: [requested(j), submitted(j), started(j), completed(j, output="Waves.")],
    lambda j: [requested(j), submitted(j), started(j), completed(j, "failed", error="boom")],
    lambda j: [requested(j), submitted(j), failed(j)],
    lambda j: [requested(j), submitted(j), started(j), cancel(j), completed(j, "canceled")],
    lambda j: [requested(j), cancel(j, s=0.5)],
    lambda j: [requested(j), submitted(j), started(j), completed(j, "aborted")],
]


class End(NamedTuple):
    """How a story ends, written out from the contract's state table rather than computed by
    `transition`, so a bug in that function cannot pass on both sides of the comparison."""

    status: str
    version: int
    output: str | None
    error_code: str | None
    prediction_id: str | None
    cancel_requested: bool
    # Each applied change: its event and the status it left.
    changes: list[tuple[str, str]]


# One per story, in the same order as STORIES.
ENDS: list[End] = [
    End("succeeded", 4, "Waves.", None, "pred-1", False, [
        ("requested", "pending"), ("submitted", "processing"), ("started", "processing"),
        ("completed", "succeeded"),
    ]),
    # A failed prediction: `failed` with `prediction_failed`.
    End("failed", 4, None, "prediction_failed", "pred-1", False, [
        ("requested", "pending"), ("submitted", "processing"), ("started", "processing"),
        ("completed", "failed"),
    ]),
    # The runner's own `failed` keeps its code and the prediction it had.
    End("failed", 3, None, "attempts_exhausted", "pred-1", False, [
        ("requested", "pending"), ("submitted", "processing"), ("failed", "failed"),
    ]),
    # `canceled` after the user asked: `canceled`; the request itself is a change (version).
    End("canceled", 5, None, None, "pred-1", True, [
        ("requested", "pending"), ("submitted", "processing"), ("started", "processing"),
        ("cancel_requested", "processing"), ("completed", "canceled"),
    ]),
    # A pending job canceled without a prediction.
    End("canceled", 2, None, None, None, True, [
        ("requested", "pending"), ("cancel_requested", "canceled"),
    ]),
    # `aborted`: `failed` with `deadline_exceeded`.
    End("failed", 4, None, "deadline_exceeded", "pred-1", False, [
        ("requested", "pending"), ("submitted", "processing"), ("started", "processing"),
        ("completed", "failed"),
    ]),
]  # fmt: skip


def _ends_as_written(row: JobRow, history: list[HistoryEntry], story: int) -> None:
    end = ENDS[story]
    assert (
        row.status,
        row.version,
        row.output,
        row.error_code,
        row.prediction_id,
        row.cancel_requested,
    ) == end[:6]
    assert row.completed_at is not None
    assert sorted((e.kind, e.summary["to"]) for e in history) == sorted(end.changes)
    assert history[-1].summary["to"] == end.status


def _canonical(events: list[AnyJobEvent]) -> tuple[JobRow, list[HistoryEntry]]:
    row: JobRow | None = None
    entries: list[HistoryEntry] = []
    for event in events:
        change = transition(row, event)
        assert isinstance(change, Change), f"the canonical order applies every fact: {event.kind}"
        row, entry = change
        entries.append(entry)
    assert row is not None
    return row, entries


def _respects_causality(middle: list[AnyJobEvent]) -> list[AnyJobEvent]:
    """A cancel overtaking every news of the prediction cancels a *pending* job: another story.
    Keep it after the first such news, as it is in every story that has one."""
    cancels = [e for e in middle if isinstance(e, JobCancelRequested)]
    news = [i for i, e in enumerate(middle) if isinstance(e, JobSubmitted | JobStarted)]
    if not cancels or not news or middle.index(cancels[0]) > news[0]:
        return middle
    rest = [e for e in middle if e is not cancels[0]]
    first_news = next(i for i, e in enumerate(rest) if isinstance(e, JobSubmitted | JobStarted))
    return [*rest[: first_news + 1], cancels[0], *rest[first_news + 1 :]]


@st.composite
def deliveries(draw: st.DrawFn, *, keep_the_end_last: bool) -> tuple[Any, ...]:
    """(story, delivery order as indices into the story): the facts in some order, some before
    the request, and duplicates of any fact anywhere after the fact's first delivery."""
    story = draw(st.sampled_from(range(len(STORIES))))
    facts = list(range(len(STORIES[story](uuid.UUID(int=0)))))
    if keep_the_end_last:
        order = [*draw(st.permutations(facts[1:-1])), facts[-1]]
    else:
        order = draw(st.permutations(facts[1:]))
    early = draw(st.integers(0, len(order)))
    delivery = [*order[:early], 0, *order[early:]]
    for fact, where in draw(st.lists(st.tuples(st.sampled_from(facts), st.floats(0, 1)))):
        first = delivery.index(fact)
        position = first + 1 + int(where * (len(delivery) - first - 1))
        delivery.insert(position, fact)
    return story, delivery


async def _deliver(store: PostgresJobStore, events: list[AnyJobEvent]) -> list[JobRow | None]:
    """Apply as the consumer does; what raises `JobNotYetKnown` comes back once the request is
    in (its redelivery delay is longer than the gap between a request and the next event)."""
    queue = deque(events)
    waiting: list[AnyJobEvent] = []
    results: list[JobRow | None] = []
    while queue:
        event = queue.popleft()
        try:
            row = await apply_event(event, store, RecordingAnnouncer())
        except JobNotYetKnown:
            waiting.append(event)
            continue
        results.append(row)
        if row is not None and row.version == 1:
            queue.extendleft(reversed(waiting))
            waiting.clear()
    assert not waiting
    return results


def _fact(entry: HistoryEntry) -> tuple[object, ...]:
    return (entry.kind, entry.message_id, entry.occurred_at, entry.source)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=deliveries(keep_the_end_last=True))
async def test_duplicated_and_reordered_events_end_as_the_canonical_order(
    store: PostgresJobStore, case: tuple[Any, ...]
) -> None:
    story, delivery = case
    job = uuid.uuid4()
    facts = STORIES[story](job)
    middle = _respects_causality([facts[i] for i in delivery if 0 < i < len(facts) - 1])
    # Order the middle facts' first deliveries as `_respects_causality` says, keep duplicates.
    firsts = iter(dict.fromkeys(middle))
    seen: set[int] = set()
    events: list[AnyJobEvent] = []
    for i in delivery:
        if 0 < i < len(facts) - 1 and i not in seen:
            seen.add(i)
            events.append(next(firsts))
        else:
            events.append(facts[i])

    await _deliver(store, events)

    expected_row, expected_history = _canonical(facts)
    row = await store.get(job)
    history = await store.history(job)
    assert row == expected_row
    _ends_as_written(row, history, story)
    assert [e.seq for e in history] == list(range(1, row.version + 1))
    assert sorted(map(_fact, history)) == sorted(map(_fact, expected_history))
    assert all(e.recorded_at is not None for e in history)
    assert next(replace(e, recorded_at=None) for e in history) == expected_history[0]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=deliveries(keep_the_end_last=False))
async def test_a_terminal_status_never_changes_whatever_the_order(
    store: PostgresJobStore, case: tuple[Any, ...]
) -> None:
    story, delivery = case
    job = uuid.uuid4()
    facts = STORIES[story](job)
    results = await _deliver(store, [facts[i] for i in delivery])

    changes = [r for r in results if r is not None]
    ended = next((i for i, r in enumerate(changes) if is_terminal(r.status)), None)
    assert ended is not None, "every fact was delivered: something ended the job"
    assert changes[ended] is changes[-1], "a change was applied after the job ended"
    row = await store.get(job)
    assert row == changes[-1]
    history = await store.history(job)
    # Every change recorded once, none for the events that changed nothing.
    assert (
        [e.seq for e in history] == [c.version for c in changes] == list(range(1, row.version + 1))
    )
    assert history[-1].summary["to"] == row.status


@pytest.mark.parametrize("story", range(len(STORIES)))
async def test_each_story_in_order_matches_the_pure_transition(
    store: PostgresJobStore, story: int
) -> None:
    job = uuid.uuid4()
    facts = STORIES[story](job)
    await _deliver(store, facts)
    expected_row, expected_history = _canonical(facts)
    row = await store.get(job)
    history = await store.history(job)
    assert row == expected_row
    assert [replace(e, recorded_at=None) for e in history] == expected_history
    _ends_as_written(row, history, story)
    # In order, the changes come in the story's order too.
    assert [(e.kind, e.summary["to"]) for e in history] == ENDS[story].changes
