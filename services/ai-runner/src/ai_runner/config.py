"""Settings of the ai-runner service, from the environment."""

from __future__ import annotations

from typing import Annotated, ClassVar
from urllib.parse import urlsplit

import msgspec

from jobs_runtime.secrets import Secret
from jobs_runtime.settings import Port, ServiceSettings, SettingsError

Seconds = Annotated[float, msgspec.Meta(gt=0)]


def _is_url(value: str, schemes: tuple[str, ...] | None = None) -> bool:
    parts = urlsplit(value)
    scheme_ok = bool(parts.scheme) if schemes is None else parts.scheme in schemes
    return scheme_ok and bool(parts.netloc)


class Settings(ServiceSettings, frozen=True):
    """The ai-runner's settings; `APP_ENV=prod` requires NATS_URL REPLICATE_API_TOKEN."""

    required_in_prod: ClassVar[tuple[str, ...]] = (
        *ServiceSettings.required_in_prod,
        "REPLICATE_API_TOKEN",
    )

    admin_port: Port = 9002
    replicate_api_token: Secret = "dev-only-replicate-token"
    # The host root: the `replicate` client adds `/v1/...` itself. Dev: the simulator.
    replicate_base_url: str = "http://127.0.0.1:8010"
    # Where Replicate calls back (webhook-ingest); `?job=<jobId>` is added per prediction.
    # Empty: the contract's polling mode, no webhooks.
    replicate_webhook_url: str = "http://127.0.0.1:8001/api/webhooks/replicate"
    # Seconds for one call to Replicate; below the consumer's ack_wait (60 s), so a hung call
    # fails and is retried before JetStream hands the message to another replica.
    replicate_timeout_s: Seconds = 30.0
    # A job `processing` this long (by the job-store's clock) has its prediction read from
    # Replicate, in case its webhook was lost: well within Replicate's minute of webhook
    # retries plus its hour of keeping the result.
    reconcile_after_s: Seconds = 300.0
    # How often the reconciler asks the job-store for such jobs (polling mode: every
    # `poll_min_s`).
    reconcile_interval_s: Seconds = 15.0
    # Polling mode (REPLICATE_WEBHOOK_URL empty): a job is first read `poll_min_s` after its
    # prediction is announced, then ever less often, by half each time, up to `poll_max_s`.
    poll_min_s: Seconds = 1.0
    poll_max_s: Seconds = 15.0
    # Reads of predictions at once, and per second from this replica: Replicate allows 3,000
    # reads a minute per account, so replicas x this must stay below 50.
    reconcile_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    replicate_reads_per_s: Seconds = 20.0
    # Limits shared by every replica (the `<JOBS_STREAM>_LIMITS` bucket): creates in any
    # `creation_window_s` (Replicate allows 600 a minute) and predictions running at once (0,
    # for either: no limit, as benchmarks want). The window is a setting so that tests can
    # shrink it; keep it 60 elsewhere.
    creations_per_window: Annotated[int, msgspec.Meta(ge=0)] = 600
    creation_window_s: Seconds = 60.0
    max_in_flight: Annotated[int, msgspec.Meta(ge=0)] = 1000
    # Backoff of a job whose prediction could not be created for a passing reason (Replicate
    # down, throttled, our token refused): the n-th retry waits up to base * 2^(n-1), capped.
    retry_base_s: Seconds = 1.0
    retry_cap_s: Seconds = 60.0
    # A create whose outcome is unknown (runner died, 5xx, timeout) may have made a prediction;
    # its `start` webhook names the job. Until this long after that create, no runner creates
    # again, so a prediction that starts within it is found and kept as the job's only one.
    binding_wait_s: Seconds = 30.0
    # Creates that may fail transiently before the job fails with `attempts_exhausted`
    # (throttling and a refused token are waits, not counted).
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 5
    # How long JetStream waits for an ack before handing a message to another runner; 0 keeps
    # the consumer's configuration in `jobs_proto.stream`. Shorter only in tests of a killed
    # runner; every replica must use the same value, since each applies it to the consumer.
    consumer_ack_wait_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # The relay (a streaming prediction's `urls.stream` into the output log): submitted
    # predictions one replica holds at once, read or waiting for a reader, which is also the
    # relay consumer's max_ack_pending (every replica must use the same value) and the size of
    # its HTTP connection pool.
    relay_max_streams: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # Read a stream only while a client reads its job's text (gateways say so, `OutputWanted`);
    # false: read every streaming prediction's text whether anyone reads it or not.
    relay_on_demand: bool = True
    # A connection that ends early is made again after up to base * 2^(n-1) seconds (capped),
    # n the connections in a row that brought no event; `relay_max_failures` such in a row
    # give the stream up (the job's text then comes from reading the prediction, below).
    relay_retry_base_s: Seconds = 0.2
    relay_retry_cap_s: Seconds = 5.0
    relay_max_failures: Annotated[int, msgspec.Meta(ge=1)] = 8
    # A stream connection silent this long is dead: well past Replicate's 30 s idle answer.
    relay_read_timeout_s: Seconds = 90.0
    # A stream given up (or gone) while its prediction runs: the prediction is read about
    # this often instead, its text offered to the log, until it ends (streaming job types get
    # no `output` webhooks). Such reads from this replica, per second at most, whatever the
    # number of streams lost (Replicate allows 3,000 reads a minute per account).
    relay_fallback_every_s: Seconds = 1.5
    relay_fallback_reads_per_s: Seconds = 10.0

    def check(self) -> None:
        super().check()
        if not _is_url(self.replicate_base_url, ("http", "https")):
            raise SettingsError("REPLICATE_BASE_URL: must be an http(s) URL")
        # Only the shape is checked: whether Replicate accepts the URL is Replicate's answer,
        # and a job it refuses fails with that answer (prediction_rejected).
        if self.replicate_webhook_url and not _is_url(self.replicate_webhook_url):
            raise SettingsError("REPLICATE_WEBHOOK_URL: must be empty or an absolute URL")
        if self.poll_max_s < self.poll_min_s:
            raise SettingsError("POLL_MAX_S: must not be below POLL_MIN_S")
