"""The `JOBS` stream and the durable consumers over it, and the byte limits of every stream,
bucket and Object Store, as plain data the runtime applies.

Kept free of nats-py so every reader of `proto/` sees the topology without a client library.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from jobs_proto.base import Message
from jobs_proto.subjects import Subjects

MIB: Final = 1024 * 1024
MAX_MESSAGE_BYTES: Final = 8 * MIB
DAY_S: Final = 86_400.0
# Room left in an event for everything but the output, headers included: a final output
# larger than `MAX_INLINE_OUTPUT_BYTES` is stored aside in the results Object Store and the
# event carries its reference (webhook-ingest and the ai-runner decide alike; the job-store
# loads it back).
EVENT_OVERHEAD_BYTES: Final = 64 * 1024
MAX_INLINE_OUTPUT_BYTES: Final = MAX_MESSAGE_BYTES - EVENT_OVERHEAD_BYTES
# NATS counts the headers (`Nats-Msg-Id` and the protocol's framing) against `max_payload` and
# the stream's `max_msg_size`: an event's own JSON may take what this leaves.
HEADER_ALLOWANCE_BYTES: Final = 16 * 1024
MAX_EVENT_BYTES: Final = MAX_MESSAGE_BYTES - HEADER_ALLOWANCE_BYTES


def output_fits_inline(output: str) -> bool:
    """Whether a final output travels in its event rather than in the results store."""
    # Measured as JSON text: quotes and control characters grow when escaped.
    return len(msgspec.json.encode(output)) <= MAX_INLINE_OUTPUT_BYTES


class Capacity(Message, frozen=True):
    """The most bytes each stream, bucket and Object Store of one jobs stream may hold (per
    replica), and their replica count. The defaults are development's: together under 2 GiB,
    inside the dev overlay's 4 GB `max_file_store`, and small because a test server reserves
    them again for every test's own stream; production's are in deploy/base/config/common.env."""

    replicas: int = 1
    jobs_stream_max_bytes: int = 512 * MIB
    # The output log of every running prediction together: old chunks go first.
    output_stream_max_bytes: int = 1024 * MIB
    parked_stream_max_bytes: int = 64 * MIB
    idempotency_bucket_max_bytes: int = 64 * MIB
    claims_bucket_max_bytes: int = 64 * MIB
    # Two keys (the creation log and the in-flight set), each kept at its last value.
    limits_bucket_max_bytes: int = 16 * MIB
    results_store_max_bytes: int = 256 * MIB

    @property
    def per_node_bytes(self) -> int:
        """What one node reserves: it holds at most one replica of each."""
        return (
            self.jobs_stream_max_bytes
            + self.output_stream_max_bytes
            + self.parked_stream_max_bytes
            + self.idempotency_bucket_max_bytes
            + self.claims_bucket_max_bytes
            + self.limits_bucket_max_bytes
            + self.results_store_max_bytes
        )


DEV_CAPACITY: Final = Capacity()


class StreamSpec(Message, frozen=True):
    """A JetStream stream with limits retention."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    duplicate_window_s: float
    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    max_msg_size: int = MAX_MESSAGE_BYTES
    # -1: no cap on the stream's size (`max_age_s` alone bounds it).
    max_bytes: int = -1
    # When `max_bytes` is reached: "new" refuses the publish (the publisher sees an error),
    # "old" deletes the oldest messages to make room.
    discard: Literal["old", "new"] = "old"
    # Direct gets answer from any replica without the leader: readers of one subject's last
    # message (the output log's writers) spread over the cluster.
    allow_direct: bool = False


class ConsumerSpec(Message, frozen=True):
    """A durable pull consumer with explicit acks."""

    durable: str
    filter_subjects: tuple[str, ...]
    ack_wait_s: float = 30.0
    max_ack_pending: int = 1000
    max_deliver: int = -1


def jobs_stream(
    subjects: Subjects,
    *,
    name: str = "JOBS",
    replicas: int = 1,
    max_age_s: float = 30 * DAY_S,
    max_bytes: int = DEV_CAPACITY.jobs_stream_max_bytes,
) -> StreamSpec:
    """The stream of every job event; `max_age_s` must cover how long finished jobs are kept."""
    return StreamSpec(
        name=name,
        subjects=(subjects.all_events,),
        max_age_s=max_age_s,
        # Longer than the contract's 5 minutes so a webhook retried by Replicate for about a
        # minute, or a publish retried across a NATS restart, is still recognised.
        duplicate_window_s=10 * 60.0,
        replicas=replicas,
        max_bytes=max_bytes,
        # Full, the stream refuses new events (a submission answers 503, a webhook is retried
        # by Replicate, the storage alert fires) rather than deleting old ones: deleting would
        # silently break the contract's retention (events kept as long as the job-store keeps
        # finished jobs), drop events a lagging consumer has not applied yet, and hide the
        # sizing error until something needed a lost event. Size it by deploy/README.md.
        discard="new",
    )


# Headers of a parked message: why it was parked, in a word and in a line, and where it was
# bound for (the job-store parks events of `JOBS`; webhook-ingest parks webhooks naming no job).
PARK_REASON_HEADER: Final = "Jobs-Park-Reason"
PARK_DETAIL_HEADER: Final = "Jobs-Park-Detail"
PARK_SUBJECT_HEADER: Final = "Jobs-Original-Subject"


def parked_stream(
    subjects: Subjects,
    jobs_stream: str,
    *,
    replicas: int = 1,
    max_bytes: int = DEV_CAPACITY.parked_stream_max_bytes,
) -> StreamSpec:
    """The dead-letter stream beside `jobs_stream`: what must never be applied, kept for an
    operator to read (and republish), under `job_parked.<reason>`."""
    return StreamSpec(
        name=f"{jobs_stream}_PARKED",
        subjects=(subjects.all_parked,),
        max_age_s=30 * DAY_S,
        # A park retried after a crash between publish and settle is stored once.
        duplicate_window_s=10 * 60.0,
        replicas=replicas,
        max_bytes=max_bytes,
        # Dead letters are evidence: full, a park fails (the job-store retries the message, a
        # parked webhook answers 503) and the parked alert is already firing, rather than the
        # oldest evidence vanishing unread.
        discard="new",
    )


def ai_runner_consumer(subjects: Subjects) -> ConsumerSpec:
    return ConsumerSpec(
        durable="ai-runner",
        filter_subjects=(subjects.kind("requested"), subjects.kind("cancel_requested")),
        # Creating a prediction may take Replicate a while; the runner also marks progress.
        ack_wait_s=60.0,
        max_ack_pending=500,
    )


def relay_consumer(subjects: Subjects, *, max_streams: int = 2000) -> ConsumerSpec:
    """The ai-runner's relay: one submitted prediction per message, held unacknowledged (and
    marked in progress) while its stream is read, so a crashed relay's streams are redelivered;
    `max_ack_pending` is the most streams one deployment reads at once."""
    return ConsumerSpec(
        durable="ai-runner-relay",
        filter_subjects=(subjects.kind("submitted"),),
        ack_wait_s=30.0,
        max_ack_pending=max_streams,
    )


def job_store_consumer(subjects: Subjects) -> ConsumerSpec:
    return ConsumerSpec(durable="job-store", filter_subjects=(subjects.all_events,))
