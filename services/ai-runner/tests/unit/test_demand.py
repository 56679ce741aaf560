"""The relay's demand rules: which submitted predictions are read at once, and how long a
gateway's word that a client reads a job lasts."""

import uuid

from ai_runner.demand import RecentlyWanted, start_now


def test_a_job_is_wanted_for_a_few_periods_after_the_last_word() -> None:
    wanted = RecentlyWanted(every_s=5.0)
    job = uuid.uuid4()
    assert not wanted.wanted(job, 100.0)
    wanted.note(job, 100.0)
    assert wanted.wanted(job, 100.0)
    assert wanted.wanted(job, 115.0)
    assert not wanted.wanted(job, 115.1)
    wanted.note(job, 115.0)  # the gateway repeats itself while its client reads
    assert wanted.wanted(job, 125.0)


def test_the_oldest_words_are_forgotten_first() -> None:
    wanted = RecentlyWanted(every_s=5.0, max_remembered=2)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    wanted.note(first, 1.0)
    wanted.note(second, 2.0)
    wanted.note(first, 3.0)  # asked again: now the newest
    wanted.note(third, 4.0)
    assert len(wanted) == 2
    assert wanted.wanted(first, 4.0)
    assert not wanted.wanted(second, 4.0)
    assert wanted.wanted(third, 4.0)


def test_a_stream_is_read_at_once_only_when_someone_reads_it_or_read_it() -> None:
    assert start_now(on_demand=False, wanted=False, logged_chars=0)
    assert start_now(on_demand=True, wanted=True, logged_chars=0)
    # Taken over from a replica that had a reader: the log holds text already.
    assert start_now(on_demand=True, wanted=False, logged_chars=12)
    assert not start_now(on_demand=True, wanted=False, logged_chars=0)
