"""Admission, reads, lists and cancels over fake ports: what is published, when a read answers
from the job-store, from the stream, `None` (404) or `Unavailable` (503), which list queries
are `422` naming their parameter, and the cancel decision table."""

import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from gateway.handlers import (
    Admitted,
    CancelJob,
    Dependencies,
    Found,
    InvalidRequest,
    JobFinished,
    NewJob,
    NotFound,
    ReadJob,
    Refused,
    SubmitJob,
    admit_job,
    cancel_job,
    list_jobs,
    list_page,
    parse_list_query,
    read_job,
    submit_job,
)
from gateway.handlers import cancel as handle_cancel
from gateway.handlers import read as handle_read
from gateway.ports import BadCursor
from jobs_proto.api import GetJob, JobPage, JobReply, JobView, ListJobs, ProblemDetail
from jobs_proto.events import JobCancelRequested, JobRequested
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.pending import pending_view
from jobs_proto.status import JobStatus
from jobs_runtime.errors import Unavailable

from ..fakes import FakeJobsStream as FakeStream
from ..fakes import FakeJobStore

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
JOB_ID = uuid.UUID("6f1c1c1e-8d3c-4a57-9a53-0c3f1f2a9b10")


def requested(user_id: str = "alice") -> JobRequested:
    return JobRequested(
        job_id=JOB_ID,
        occurred_at=AT,
        user_id=user_id,
        job_type="video_outline",
        input={"topic": "tides", "sections": None},
        price=JOB_TYPES["video_outline"].price,
        # No budget applies: nothing reserved.
        reserved_micros=0,
    )


# The job right after admission as `GET /api/jobs/{id}` shows it, written out from the
# contract (not built by `pending_view`), so a wrong field there cannot pass on both sides.
PENDING_JSON: dict[str, object] = {
    "jobId": "6f1c1c1e-8d3c-4a57-9a53-0c3f1f2a9b10",
    "type": "video_outline",
    "status": "pending",
    "version": 1,
    "input": {"topic": "tides", "sections": None},
    "output": None,
    "error": None,
    "predictionId": None,
    "createdAt": "2030-01-02T03:04:05Z",
    "updatedAt": "2030-01-02T03:04:05Z",
    "completedAt": None,
    # No prediction has ended: nothing was spent yet.
    "usage": None,
    "cancelRequested": False,
}


def shown(view: JobView | None) -> object:
    """The view as the API's JSON, keys and all."""
    return msgspec.json.decode(msgspec.json.encode(view))


async def test_admission_publishes_the_request_and_answers_pending() -> None:
    bus = FakeStream()
    job = NewJob(job_type="video_outline", input={"topic": "tides", "sections": None})
    accepted = await admit_job("alice", job, bus, clock=lambda: AT, new_id=lambda: JOB_ID)
    assert accepted.job_id == JOB_ID
    assert accepted.status == "pending"
    assert bus.published == [requested()]


async def test_admission_fails_when_the_event_is_not_stored() -> None:
    job = NewJob(job_type="video_outline", input={"topic": "tides"})
    with pytest.raises(Unavailable):
        await admit_job("alice", job, FakeStream(down=True), clock=lambda: AT)


async def test_a_job_the_store_knows_comes_from_the_store() -> None:
    view = pending_view(requested())
    stored = JobView(**{**{f: getattr(view, f) for f in view.__struct_fields__}, "version": 4})
    store = FakeJobStore()
    store.put(stored)
    read = await read_job("alice", JOB_ID, store, FakeStream(unreadable=True))
    assert read == stored
    assert shown(read) == {**PENDING_JSON, "version": 4}
    assert store.asked == [GetJob(job_id=JOB_ID, user_id="alice")]


async def test_a_fresh_job_the_store_has_not_consumed_yet_is_pending_from_the_stream() -> None:
    log = FakeStream(stored=[requested()])
    view = await read_job("alice", JOB_ID, FakeJobStore(), log)
    assert view == pending_view(requested())
    assert shown(view) == PENDING_JSON
    assert view is not None
    assert (view.status, view.version, view.created_at, view.updated_at) == ("pending", 1, AT, AT)


async def test_the_stream_also_answers_while_the_store_is_down() -> None:
    log = FakeStream(stored=[requested()])
    view = await read_job("alice", JOB_ID, FakeJobStore(down=True), log)
    assert view == pending_view(requested())
    assert shown(view) == PENDING_JSON


async def test_another_users_job_is_not_found_even_while_the_store_is_down() -> None:
    log = FakeStream(stored=[requested(user_id="bob")])
    assert await read_job("alice", JOB_ID, FakeJobStore(), log) is None
    assert await read_job("alice", JOB_ID, FakeJobStore(down=True), log) is None


async def test_an_unknown_job_is_not_found_only_when_the_store_says_so() -> None:
    assert await read_job("alice", JOB_ID, FakeJobStore(), FakeStream()) is None
    with pytest.raises(Unavailable):
        await read_job("alice", JOB_ID, FakeJobStore(down=True), FakeStream())


async def test_a_stream_that_cannot_be_asked_is_unavailable_not_not_found() -> None:
    with pytest.raises(Unavailable):
        await read_job("alice", JOB_ID, FakeJobStore(), FakeStream(unreadable=True))


# --- GET /api/jobs: the query --------------------------------------------------------------


def test_an_empty_query_is_the_first_page_of_50_unfiltered() -> None:
    assert parse_list_query("alice", []) == ListJobs(user_id="alice", limit=50)


def test_every_parameter_is_taken_and_repeats_are_any_of() -> None:
    query = parse_list_query(
        "alice",
        [
            ("limit", "200"),
            ("cursor", "opaque=="),
            ("status", "pending"),
            ("status", "processing"),
            ("status", "pending"),
            ("type", "video_outline"),
            ("type", "retired_type"),
            ("unknown", "ignored"),
        ],
    )
    assert query == ListJobs(
        user_id="alice",
        limit=200,
        cursor="opaque==",
        statuses=["pending", "processing"],
        types=["video_outline", "retired_type"],
    )
    assert parse_list_query("alice", [("limit", "1"), ("cursor", "")]).limit == 1
    assert parse_list_query("alice", [("cursor", "")]).cursor is None


def errors_of(parameters: list[tuple[str, str]]) -> list[ProblemDetail]:
    with pytest.raises(InvalidRequest) as refused:
        parse_list_query("alice", parameters)
    for error in refused.value.errors:
        assert error.pointer is None
        assert error.detail
    return refused.value.errors


@pytest.mark.parametrize("limit", ["0", "201", "-1", "1.5", "ten", "", "1e2", "0x10"])
def test_a_limit_outside_1_to_200_or_not_an_integer_names_limit(limit: str) -> None:
    assert [e.parameter for e in errors_of([("limit", limit)])] == ["limit"]


@pytest.mark.parametrize("limit", ["9" * 5000, "0" * 5000 + "1" + "0" * 10, "-" + "9" * 4301])
def test_a_limit_past_pythons_digit_limit_names_limit(limit: str) -> None:
    # `int` raises past 4,300 digits: this was a `500`.
    (error,) = errors_of([("limit", limit)])
    assert error.parameter == "limit"
    assert "must be an integer from 1 to 200" in error.detail
    assert len(error.detail) < 100


def test_leading_zeros_are_still_a_limit() -> None:
    assert parse_list_query("alice", [("limit", "0" * 5000 + "7")]).limit == 7


def test_a_repeated_limit_or_cursor_is_refused() -> None:
    errors = errors_of([("limit", "5"), ("limit", "6"), ("cursor", "a"), ("cursor", "b")])
    assert [e.parameter for e in errors] == ["limit", "cursor"]


def test_an_unknown_status_names_status_and_every_bad_parameter_is_reported() -> None:
    errors = errors_of([("status", "done"), ("status", "pending"), ("limit", "0"), ("type", "")])
    assert [e.parameter for e in errors] == ["limit", "status", "type"]
    assert "'done'" in errors[1].detail


async def test_a_list_asks_the_store_and_passes_its_refusals_on() -> None:
    store = FakeJobStore()
    query = ListJobs(user_id="alice", limit=3, statuses=["failed"])
    assert await list_jobs(query, store) == JobPage(items=[], next_cursor=None)
    assert store.listed == [query]
    with pytest.raises(BadCursor):
        await list_jobs(ListJobs(user_id="alice", cursor="stale"), store)
    with pytest.raises(Unavailable):
        await list_jobs(query, FakeJobStore(down=True))


# --- POST /api/jobs/{jobId}/cancel: the decision table ----------------------------------------

CANCEL_AT = datetime(2030, 1, 2, 3, 9, tzinfo=UTC)


def stored(status: JobStatus, user_id: str = "alice") -> FakeJobStore:
    view = msgspec.structs.replace(pending_view(requested()), status=status, version=3)
    store = FakeJobStore()
    store.put(view, user_id)
    return store


async def cancel(
    store: FakeJobStore, log: FakeStream | None = None, bus: FakeStream | None = None
) -> JobView | None:
    return await cancel_job(
        "alice", JOB_ID, store, log or FakeStream(), bus or FakeStream(), clock=lambda: CANCEL_AT
    )


@pytest.mark.parametrize("status", ["pending", "processing"])
async def test_a_running_job_is_asked_to_cancel_and_answered_as_it_is(status: JobStatus) -> None:
    bus = FakeStream()
    view = await cancel(stored(status), bus=bus)
    assert view is not None
    assert (view.job_id, view.status, view.version) == (JOB_ID, status, 3)
    assert bus.published == [
        JobCancelRequested(job_id=JOB_ID, occurred_at=CANCEL_AT, user_id="alice")
    ]


async def test_asking_again_publishes_the_same_deduplicated_request() -> None:
    bus = FakeStream()
    await cancel(stored("processing"), bus=bus)
    await cancel(stored("processing"), bus=bus)
    assert bus.published[0] == bus.published[1]


async def test_an_already_canceled_job_is_answered_without_publishing() -> None:
    bus = FakeStream()
    view = await cancel(stored("canceled"), bus=bus)
    assert view is not None
    assert view.status == "canceled"
    assert bus.published == []


@pytest.mark.parametrize("status", ["succeeded", "failed"])
async def test_a_finished_job_cannot_be_canceled(status: JobStatus) -> None:
    bus = FakeStream()
    with pytest.raises(JobFinished) as refused:
        await cancel(stored(status), bus=bus)
    assert refused.value.status == status
    assert bus.published == []


async def test_an_unknown_or_another_users_job_is_not_found_and_nothing_is_published() -> None:
    bus = FakeStream()
    assert await cancel(FakeJobStore(), bus=bus) is None
    assert await cancel(stored("processing", user_id="bob"), bus=bus) is None
    log = FakeStream(stored=[requested(user_id="bob")])
    assert await cancel(FakeJobStore(down=True), log=log, bus=bus) is None
    assert bus.published == []


async def test_a_fresh_job_only_in_the_stream_is_canceled_while_pending() -> None:
    bus = FakeStream()
    log = FakeStream(stored=[requested()])
    for store in (FakeJobStore(), FakeJobStore(down=True)):
        view = await cancel(store, log=log, bus=bus)
        # The answer shows the request at once, before the job-store applied it.
        assert view == msgspec.structs.replace(pending_view(requested()), cancel_requested=True)
    assert len(bus.published) == 2
    assert all(isinstance(e, JobCancelRequested) for e in bus.published)


async def test_without_nats_a_cancel_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        await cancel(stored("processing"), bus=FakeStream(down=True))
    with pytest.raises(Unavailable):
        await cancel(FakeJobStore(down=True), log=FakeStream(unreadable=True))


# --- the message handlers: one message and the dependencies in, an outcome out ---------------


def deps(
    bus: FakeStream | None = None, store: FakeJobStore | None = None, log: FakeStream | None = None
) -> Dependencies:
    return Dependencies(
        bus=bus or FakeStream(),
        store=store or FakeJobStore(),
        requested=log or FakeStream(),
        clock=lambda: AT,
        new_id=lambda: JOB_ID,
    )


async def test_submit_answers_admitted_or_a_refusal_naming_its_reason() -> None:
    job = NewJob(job_type="video_outline", input={"topic": "tides", "sections": None})
    bus = FakeStream()
    outcome = await submit_job(SubmitJob("alice", job), deps(bus))
    assert isinstance(outcome, Admitted)
    assert outcome.accepted.job_id == JOB_ID
    assert not outcome.replayed
    assert bus.published == [requested()]
    refused = await submit_job(SubmitJob("alice", job), deps(FakeStream(down=True)))
    assert isinstance(refused, Refused)
    assert isinstance(refused.reason, Unavailable)


async def test_read_answers_found_not_found_or_refused() -> None:
    view = pending_view(requested())
    store = FakeJobStore()
    store.put(view)
    assert await handle_read(ReadJob("alice", JOB_ID), deps(store=store)) == Found(view)
    assert await handle_read(ReadJob("bob", JOB_ID), deps(store=store)) == NotFound()
    down = await handle_read(ReadJob("alice", JOB_ID), deps(store=FakeJobStore(down=True)))
    assert isinstance(down, Refused)
    assert isinstance(down.reason, Unavailable)


async def test_cancel_and_list_answer_outcomes_too() -> None:
    store = stored("succeeded")
    finished = await handle_cancel(CancelJob("alice", JOB_ID), deps(store=store))
    assert isinstance(finished, Refused)
    assert isinstance(finished.reason, JobFinished)
    assert await handle_cancel(CancelJob("bob", JOB_ID), deps(store=store)) == NotFound()
    page = await list_page(ListJobs(user_id="alice"), deps())
    assert page == JobPage(items=[], next_cursor=None)
    stale = await list_page(ListJobs(user_id="alice", cursor="stale"), deps())
    assert isinstance(stale, Refused)
    assert isinstance(stale.reason, BadCursor)


async def test_a_bug_is_not_an_outcome() -> None:
    class Broken(FakeJobStore):
        async def get_job(self, request: GetJob) -> JobReply:
            raise KeyError("a bug")

    with pytest.raises(KeyError):
        await handle_read(ReadJob("alice", JOB_ID), deps(store=Broken()))
