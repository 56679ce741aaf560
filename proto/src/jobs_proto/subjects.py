"""The subject scheme `job.<kind>.<jobId>` and the deterministic `Nats-Msg-Id` of every event.

A prefix (empty in production) lets tests and side-by-side deployments share one NATS server
without seeing each other's jobs.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Final

from jobs_proto.events import (
    EVENT_KINDS,
    JobCancelRequested,
    JobCompleted,
    JobEvent,
    JobFailed,
    JobPurged,
    JobRequested,
    JobStarted,
    JobSubmitted,
)

MSG_ID_HEADER: Final = "Nats-Msg-Id"
_PREFIX = re.compile(r"^([A-Za-z0-9_-]+\.)*$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


class SubjectError(ValueError):
    """A subject that is not `<prefix>job.<kind>.<jobId>`."""


@dataclass(frozen=True, slots=True)
class Subjects:
    """Subject names under one prefix ("" or dot-terminated tokens such as `t3f9.`)."""

    prefix: str = ""

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(f"subject prefix must be empty or end with '.': {self.prefix!r}")

    @property
    def all_events(self) -> str:
        return f"{self.prefix}job.>"

    def kind(self, kind: str) -> str:
        """Every job's events of one kind, as a consumer filter."""
        return f"{self.prefix}job.{kind}.>"

    def event(self, event: JobEvent) -> str:
        return self.job_event(event.kind, event.job_id)

    def job_event(self, kind: str, job_id: uuid.UUID) -> str:
        """Where one job's events of `kind` are: a direct get of its last one reads this."""
        return f"{self.prefix}job.{kind}.{job_id}"

    def parse(self, subject: str) -> tuple[str, uuid.UUID]:
        """The kind and job id of an event subject; the kind may be one this release lacks."""
        if not subject.startswith(self.prefix):
            raise SubjectError(f"not under prefix {self.prefix!r}: {subject}")
        parts = subject[len(self.prefix) :].split(".")
        if len(parts) != 3 or parts[0] != "job":
            raise SubjectError(f"not job.<kind>.<jobId>: {subject}")
        try:
            return parts[1], uuid.UUID(parts[2])
        except ValueError:
            raise SubjectError(f"job id is not a UUID: {subject}") from None

    def job_change(self, job_id: uuid.UUID) -> str:
        """Where the job-store announces a committed change (core NATS, outside `job.>`)."""
        return f"{self.prefix}job_change.{job_id}"

    @property
    def all_job_changes(self) -> str:
        return f"{self.prefix}job_change.>"

    def progress(self, job_id: uuid.UUID) -> str:
        """Partial output of a running prediction (core NATS, never stored in `JOBS`)."""
        return f"{self.prefix}job_progress.{job_id}"

    @property
    def all_progress(self) -> str:
        return f"{self.prefix}job_progress.>"

    def output(self, job_id: uuid.UUID, prediction_id: str) -> str:
        """The output log of one prediction of a job (a stream of its own, outside `job.>`).

        Keyed by the prediction too, so the text of an orphaned prediction (created twice for
        one job) never mixes with the text of the prediction the job is bound to.
        """
        if not _TOKEN.match(prediction_id):
            raise SubjectError(f"prediction id is not one subject token: {prediction_id!r}")
        return f"{self.prefix}job_output.{job_id}.{prediction_id}"

    @property
    def all_output(self) -> str:
        return f"{self.prefix}job_output.>"

    def output_wanted(self, job_id: uuid.UUID) -> str:
        """Where a gateway says a client reads a running job's text (core NATS): the relay
        reads a prediction's stream only while someone does."""
        return f"{self.prefix}job_output_wanted.{job_id}"

    @property
    def all_output_wanted(self) -> str:
        return f"{self.prefix}job_output_wanted.>"

    def parked(self, reason: str) -> str:
        """Where a message that must never be applied is kept, by why (outside `job.>`)."""
        return f"{self.prefix}job_parked.{reason}"

    @property
    def all_parked(self) -> str:
        return f"{self.prefix}job_parked.>"

    def request(self, service: str, endpoint: str) -> str:
        """Request/reply subject of a service endpoint, e.g. the job-store's get-by-id."""
        return f"{self.prefix}svc.{service}.{endpoint}"

    @property
    def get_job(self) -> str:
        """The job-store's get-by-id endpoint (`GetJob` in, `JobReply` out)."""
        return self.request("job-store", "get")

    @property
    def list_jobs(self) -> str:
        """The job-store's list endpoint (`ListJobs` in, `JobPage` out)."""
        return self.request("job-store", "list")

    @property
    def stuck_jobs(self) -> str:
        """The job-store's stuck-jobs endpoint (`FindStuckJobs` in, `StuckJobs` out)."""
        return self.request("job-store", "stuck")

    @property
    def reserve_budget(self) -> str:
        """The job-store's budget reservation (`ReserveBudget` in, `BudgetDecision` out)."""
        return self.request("job-store", "reserve")

    @property
    def release_budget(self) -> str:
        """Frees an unpublished job's reservation (`ReleaseBudget` in, `BudgetDecision` out)."""
        return self.request("job-store", "release")

    @property
    def usage(self) -> str:
        """A user's spend and budget (`GetUsage` in, `UsageReport` out)."""
        return self.request("job-store", "usage")

    @property
    def job_versions(self) -> str:
        """The job-store's versions endpoint (`GetJobVersions` in, `JobVersions` out)."""
        return self.request("job-store", "versions")

    @property
    def job_history(self) -> str:
        """The job-store's history endpoint (`GetJobHistory` in, `JobHistory` out)."""
        return self.request("job-store", "history")


def message_id(event: JobEvent) -> str:
    """The `Nats-Msg-Id` that makes JetStream drop a retried publish of the same fact.

    Webhook events reuse Replicate's `webhook-id`, so a redelivered webhook is the same message;
    what the ai-runner learns by polling is keyed by the prediction, so two runners polling the
    same prediction publish one event.
    """
    match event:
        case JobRequested():
            return f"requested:{event.job_id}"
        case JobSubmitted():
            return f"submitted:{event.job_id}:{event.prediction_id}"
        case JobStarted():
            return event.webhook_id or f"started:{event.prediction_id}"
        case JobCompleted():
            return event.webhook_id or f"completed:{event.prediction_id}"
        case JobFailed():
            return f"failed:{event.job_id}"
        case JobCancelRequested():
            return f"cancel:{event.job_id}"
        case JobPurged():
            return f"purged:{event.job_id}"
    raise TypeError(f"no message id rule for {type(event).__name__}")  # pragma: no cover


__all__ = ["EVENT_KINDS", "MSG_ID_HEADER", "SubjectError", "Subjects", "message_id"]
