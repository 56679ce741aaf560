"""The watched set without I/O (`wanted.py` through the hub): a running job with a known
prediction is announced once when a stream of any kind starts reading it (or when a watched
job's prediction becomes known), again at each round while read, whatever the number of
streams, and no more once it ended or nobody reads it."""

import uuid

from gateway.hub import Hub
from gateway.wanted import WantedOutput
from jobs_proto.api import JobChanged
from jobs_proto.output import OutputWanted
from jobs_proto.status import JobStatus

from .test_realtime import view


def running(
    hub: Hub, job_id: uuid.UUID, prediction: str | None = "p1", user: str = "alice"
) -> None:
    """A stream's read of the job: processing, bound to `prediction`."""
    status: JobStatus = "processing" if prediction else "pending"
    hub.note_view(view(job_id, 2, status, prediction_id=prediction), user)


def changed(
    hub: Hub, job_id: uuid.UUID, version: int, status: JobStatus, prediction: str | None
) -> None:
    job = view(job_id, version, status, prediction_id=prediction)
    hub.publish_change(JobChanged(user_id="alice", job=job))


def wanted(job_id: uuid.UUID, prediction: str = "p1") -> list[OutputWanted]:
    return [OutputWanted(job_id=job_id, prediction_id=prediction)]


def test_a_read_running_job_is_announced_once_at_once_then_at_every_round() -> None:
    hub = Hub()
    woken: list[None] = []
    hub.wanted.on_fresh = lambda: woken.append(None)
    job_id = uuid.uuid4()
    subscription = hub.open_output(job_id)
    running(hub, job_id)
    assert hub.wanted.fresh() == wanted(job_id)
    assert len(woken) == 1
    assert hub.wanted.fresh() == []
    assert hub.wanted.round() == wanted(job_id)
    assert hub.wanted.round() == wanted(job_id)
    assert hub.wanted.watched == 1
    subscription.close()
    assert hub.wanted.round() == []
    assert hub.wanted.watched == 0
    # Read again after a round without a reader: announced at once again.
    with hub.watch_job(job_id):
        assert hub.wanted.fresh() == wanted(job_id)
    assert len(woken) == 2


def test_a_thousand_streams_on_one_job_are_one_message_per_period() -> None:
    hub = Hub()
    job_id = uuid.uuid4()
    subscriptions = [hub.open_output(job_id) for _ in range(500)]
    subscriptions += [hub.open_job(job_id) for _ in range(500)]
    for _ in range(3):
        running(hub, job_id)
    assert hub.wanted.fresh() == wanted(job_id)
    assert hub.wanted.round() == wanted(job_id)
    for subscription in subscriptions[:-1]:
        subscription.close()
    assert hub.wanted.round() == wanted(job_id)
    subscriptions[-1].close()
    assert hub.wanted.round() == []


def test_a_pending_job_is_announced_when_its_prediction_becomes_known() -> None:
    hub = Hub()
    job_id = uuid.uuid4()
    with hub.watch_job(job_id):
        running(hub, job_id, prediction=None)
        assert hub.wanted.fresh() == []
        assert hub.wanted.round() == []
        changed(hub, job_id, 2, "processing", "p9")
        assert hub.wanted.fresh() == wanted(job_id, "p9")


def test_an_ended_job_is_never_announced_even_from_a_state_read_before_its_end() -> None:
    hub = Hub()
    job_id, finished = uuid.uuid4(), uuid.uuid4()
    with hub.watch_job(job_id), hub.watch_job(finished):
        running(hub, job_id)
        changed(hub, job_id, 3, "succeeded", "p1")
        assert hub.wanted.fresh() == []
        assert hub.wanted.round() == []
        # A stream that read the job just before it ended notes that older state after.
        running(hub, job_id)
        assert hub.wanted.round() == []
        # A finished job read by a stream opening now.
        hub.note_view(view(finished, 3, "failed", prediction_id="p2"), "alice")
        assert hub.wanted.fresh() == []
        assert hub.wanted.round() == []


def test_the_multiplexed_stream_watches_its_users_running_jobs() -> None:
    hub = Hub()
    mine, pending, theirs = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with hub.watch_user("alice"):
        # What `/api/events` replays first: the user's open jobs.
        running(hub, mine)
        running(hub, pending, prediction=None)
        running(hub, theirs, prediction="p3", user="bob")
        assert hub.wanted.fresh() == wanted(mine)
        changed(hub, pending, 2, "processing", "p2")
        assert hub.wanted.fresh() == wanted(pending, "p2")
        assert sorted(hub.wanted.round(), key=lambda w: w.prediction_id) == [
            *wanted(mine),
            *wanted(pending, "p2"),
        ]
    assert hub.wanted.round() == []
    # Bob reads his job's text now.
    with hub.watch_user("bob"):
        assert hub.wanted.round() == wanted(theirs, "p3")


def test_unwatched_changes_announce_nothing_and_an_end_is_remembered() -> None:
    hub = Hub()
    job_id = uuid.uuid4()
    # The feed's path for a job no stream here waits for: the announcement's head only.
    hub.note_change(job_id, "alice", terminal=False)
    with hub.watch_job(job_id):
        assert hub.wanted.round() == []
    hub.note_change(job_id, "alice", terminal=True)
    with hub.watch_job(job_id):
        running(hub, job_id)
        assert hub.wanted.fresh() == []
        assert hub.wanted.round() == []


def test_the_running_jobs_remembered_are_bounded_oldest_forgotten_first() -> None:
    older, newer, newest = read = [uuid.uuid4() for _ in range(3)]
    set_ = WantedOutput(lambda job_id: job_id in read, max_running=2, max_ended=1)
    for prediction, job_id in enumerate((older, newer, newest)):
        set_.learn(job_id, f"p{prediction}", terminal=False)
    assert [w.job_id for w in set_.round()] == [newer, newest]
    set_.learn(older, None, terminal=True)
    set_.learn(newer, None, terminal=True)
    # Only the last end is remembered: the older one may run again (a stale read wins).
    set_.learn(older, "p0", terminal=False)
    set_.learn(newer, "p1", terminal=False)
    assert [w.job_id for w in set_.round()] == [newest, older]
