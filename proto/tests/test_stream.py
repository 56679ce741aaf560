from jobs_proto.stream import (
    MAX_MESSAGE_BYTES,
    ai_runner_consumer,
    job_store_consumer,
    jobs_stream,
    parked_stream,
)
from jobs_proto.subjects import Subjects


def test_jobs_stream_meets_the_contract() -> None:
    spec = jobs_stream(Subjects(), replicas=3)
    assert spec.name == "JOBS"
    assert spec.subjects == ("job.>",)
    assert spec.storage == "file"
    assert spec.replicas == 3
    assert spec.duplicate_window_s >= 5 * 60
    assert spec.max_msg_size == MAX_MESSAGE_BYTES == 8 * 1024 * 1024


def test_consumers_filter_under_the_prefix() -> None:
    subjects = Subjects("t9.")
    assert ai_runner_consumer(subjects).filter_subjects == (
        "t9.job.requested.>",
        "t9.job.cancel_requested.>",
    )
    assert job_store_consumer(subjects).filter_subjects == ("t9.job.>",)


def test_the_parked_stream_lies_outside_the_jobs_subjects() -> None:
    subjects = Subjects("t9.")
    spec = parked_stream(subjects, "JOBS_T9", replicas=3)
    assert spec.name == "JOBS_T9_PARKED"
    assert spec.subjects == ("t9.job_parked.>",)
    assert subjects.parked("no_job") == "t9.job_parked.no_job"
    assert not subjects.parked("no_job").startswith("t9.job.")
    assert spec.replicas == 3
