"""The resync's decisions: which running jobs open streams wait for (as the hub keeps them), and
which stored versions mean a change announcement was lost."""

from __future__ import annotations

import uuid

from gateway.hub import Hub
from gateway.resync import Missed, Seen, chunks, missed, watched_running
from jobs_proto.api import JobChanged

from ..fakes import job_view


def test_only_running_jobs_with_an_open_stream_are_asked_about() -> None:
    mine, theirs, ended, unwatched = (uuid.uuid4() for _ in range(4))
    running = {
        mine: Seen("alice", 3),
        theirs: Seen("bob", 2),
        unwatched: Seen("carol", 1),
    }
    assert watched_running(running, [], set()) == {}
    # A job's own stream; an ended job (no longer running) is not asked about.
    assert watched_running(running, [theirs, ended], set()) == {theirs: Seen("bob", 2)}
    # A user's multiplexed stream: every running job of theirs.
    assert watched_running(running, [], {"alice"}) == {mine: Seen("alice", 3)}
    assert watched_running(running, [theirs], {"alice"}) == {
        mine: Seen("alice", 3),
        theirs: Seen("bob", 2),
    }


def test_a_stored_version_newer_than_the_one_seen_is_a_missed_change() -> None:
    behind, current, purged = (uuid.uuid4() for _ in range(3))
    asked = {behind: Seen("alice", 3), current: Seen("alice", 5), purged: Seen("bob", 1)}
    stored = {behind: 5, current: 5}
    assert missed(asked, stored) == [Missed(behind, "alice", 3, 5)]
    assert missed(asked, {current: 4}) == []  # older than seen: a slow reply, no change
    assert missed({}, stored) == []


def test_many_ids_are_asked_in_bounded_chunks() -> None:
    ids = [uuid.uuid4() for _ in range(2_501)]
    parts = list(chunks(ids, 1_000))
    assert [len(p) for p in parts] == [1_000, 1_000, 501]
    assert [i for p in parts for i in p] == ids
    assert list(chunks([], 1_000)) == []


def test_the_hub_asks_nothing_while_no_stream_is_open() -> None:
    hub = Hub()
    job_id = uuid.uuid4()
    hub.note_change(job_id, "alice", terminal=False, version=2)
    assert hub.watched_running() == {}


def test_the_hub_keeps_the_newest_version_seen_of_each_watched_running_job() -> None:
    hub = Hub()
    job_id, other = uuid.uuid4(), uuid.uuid4()
    with hub.watch_job(job_id):
        hub.note_view(job_view(job_id, 2), "alice")
        assert hub.watched_running() == {job_id: Seen("alice", 2)}
        hub.publish_change(JobChanged(user_id="alice", job=job_view(job_id, 4)))
        # An older state read late does not take the version back.
        hub.note_view(job_view(job_id, 3), "alice")
        # The feed's path for an announcement no stream needed decoding.
        hub.note_change(other, "alice", terminal=False, version=7)
        assert hub.watched_running() == {job_id: Seen("alice", 4)}
        assert hub.seen(job_id) == Seen("alice", 4)
        hub.publish_change(JobChanged(user_id="alice", job=job_view(job_id, 5, "succeeded")))
        assert hub.watched_running() == {}
        assert hub.seen(job_id) is None
    output = hub.open_output(other)
    try:
        assert hub.watched_running() == {other: Seen("alice", 7)}
    finally:
        output.close()
    with hub.watch_user("alice"):
        assert hub.watched_running() == {other: Seen("alice", 7)}
    assert hub.watched_running() == {}
