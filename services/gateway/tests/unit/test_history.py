"""`GET /api/jobs/{jobId}/history` over fake ports: which queries are `422` naming their
parameter, and the handler's outcomes (a page, `NotFound` for an unknown job and another
user's alike, `BadCursor` and `Unavailable` as refusals)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.handlers import (
    Dependencies,
    InvalidRequest,
    NotFound,
    Refused,
    history,
    parse_history_query,
)
from gateway.ports import BadCursor
from jobs_proto.api import GetJobHistory, JobHistory, JobHistoryEntry, ProblemDetail
from jobs_proto.events import JobRequested
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.pending import pending_view
from jobs_runtime.errors import Unavailable

from ..fakes import FakeJobsStream, FakeJobStore

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
JOB_ID = uuid.UUID("6f1c1c1e-8d3c-4a57-9a53-0c3f1f2a9b10")
KINDS = ("requested", "submitted", "started", "completed")


# --- the query ------------------------------------------------------------------------------


def test_an_empty_query_asks_for_up_to_1000_entries_from_the_first() -> None:
    query = parse_history_query("alice", JOB_ID, [])
    assert query == GetJobHistory(job_id=JOB_ID, user_id="alice", limit=1000)


def test_limit_and_cursor_are_taken_and_other_parameters_ignored() -> None:
    parameters = [("limit", "1000"), ("cursor", "3"), ("status", "pending")]
    query = parse_history_query("alice", JOB_ID, parameters)
    assert query == GetJobHistory(job_id=JOB_ID, user_id="alice", limit=1000, cursor="3")
    assert parse_history_query("alice", JOB_ID, [("limit", "1"), ("cursor", "")]).cursor is None


def errors_of(parameters: list[tuple[str, str]]) -> list[ProblemDetail]:
    with pytest.raises(InvalidRequest) as refused:
        parse_history_query("alice", JOB_ID, parameters)
    for error in refused.value.errors:
        assert error.pointer is None
        assert error.detail
    return refused.value.errors


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "1.5", "ten", "", "9" * 5000])
def test_a_limit_outside_1_to_1000_or_not_an_integer_names_limit(limit: str) -> None:
    (error,) = errors_of([("limit", limit)])
    assert error.parameter == "limit"
    assert len(error.detail) < 100


def test_a_repeated_limit_or_cursor_names_both() -> None:
    errors = errors_of([("limit", "5"), ("limit", "6"), ("cursor", "a"), ("cursor", "b")])
    assert [e.parameter for e in errors] == ["limit", "cursor"]


# --- the handler ----------------------------------------------------------------------------


def entry(seq: int, kind: str) -> JobHistoryEntry:
    at = AT + timedelta(seconds=seq)
    return JobHistoryEntry(
        seq=seq,
        kind=kind,
        occurred_at=at,
        recorded_at=at,
        source="job-store",
        message_id=f"{JOB_ID}:{kind}",
        summary={"to": kind},
    )


def deps(store: FakeJobStore) -> Dependencies:
    return Dependencies(
        bus=FakeJobsStream(), store=store, requested=FakeJobsStream(), clock=lambda: AT
    )


def finished_job() -> FakeJobStore:
    requested = JobRequested(
        job_id=JOB_ID,
        occurred_at=AT,
        user_id="alice",
        job_type="video_outline",
        input={"topic": "tides"},
        price=JOB_TYPES["video_outline"].price,
        reserved_micros=0,
    )
    store = FakeJobStore()
    store.put(pending_view(requested), "alice")
    store.histories[JOB_ID] = [entry(seq, kind) for seq, kind in enumerate(KINDS, 1)]
    return store


def ask(user_id: str = "alice", *, limit: int = 1000, cursor: str | None = None) -> GetJobHistory:
    return GetJobHistory(job_id=JOB_ID, user_id=user_id, limit=limit, cursor=cursor)


async def test_the_owner_gets_every_entry_oldest_first() -> None:
    store = finished_job()
    page = await history(ask(), deps(store))
    assert isinstance(page, JobHistory)
    assert [e.kind for e in page.entries or []] == list(KINDS)
    assert (page.truncated, page.next_cursor) == (False, None)
    assert store.histories_asked == [ask()]


async def test_pages_of_one_walk_every_entry_by_their_cursor() -> None:
    deps_ = deps(finished_job())
    kinds: list[str] = []
    cursor: str | None = None
    for _ in KINDS:
        page = await history(ask(limit=1, cursor=cursor), deps_)
        assert isinstance(page, JobHistory)
        kinds += [e.kind for e in page.entries or []]
        cursor = page.next_cursor
        assert page.truncated == (cursor is not None)
    assert kinds == list(KINDS)
    assert cursor is None


async def test_an_unknown_job_and_another_users_are_the_same_not_found() -> None:
    assert await history(ask("bob"), deps(finished_job())) == NotFound()
    assert await history(ask(), deps(FakeJobStore())) == NotFound()


@pytest.mark.parametrize(
    ("store", "reason"),
    [(finished_job(), BadCursor), (FakeJobStore(down=True), Unavailable)],
)
async def test_a_refused_cursor_and_a_store_away_are_refusals(
    store: FakeJobStore, reason: type[Exception]
) -> None:
    outcome = await history(ask(cursor="not-a-seq"), deps(store))
    assert isinstance(outcome, Refused)
    assert isinstance(outcome.reason, reason)


async def test_a_bug_is_not_an_outcome() -> None:
    with pytest.raises(RuntimeError):
        await history(ask(), deps(FakeJobStore(broken=True)))
