"""Entry point of the `gateway` command: the HTTP API under the shared runtime, or
`gateway dev-token` to print a token for local use."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from gateway.adapters.feed import NatsJobFeed
from gateway.adapters.http import GatewayPorts, build_app
from gateway.adapters.idempotency import KvIdempotencyKeys, idempotency_bucket
from gateway.adapters.jwks import HttpJwksSource
from gateway.adapters.metrics import HTTP_REQUESTS, HTTP_SECONDS, PrometheusObserver
from gateway.adapters.nats import (
    JetStreamEventBus,
    NatsBudgets,
    NatsJobStore,
    StreamRequestedLog,
)
from gateway.adapters.output import NatsOutputLog
from gateway.adapters.resync import StreamResync
from gateway.adapters.wanted import NatsOutputWanted
from gateway.auth import TokenVerifier
from gateway.budgets import MAX_BUDGET_USD, Spending
from gateway.cache import FinishedJobs
from gateway.config import DEV_JWT_SECRET, DEV_SECRETS_FILE, Settings
from gateway.hub import Hub, StreamPolicy
from gateway.job_tokens import JobTokens
from gateway.jobviews import JobViews, ViewedJobStore
from gateway.jwks import JwksKeys
from gateway.limits import OpenJobs, RequestRate
from gateway.streams import OpenStreams
from gateway.tokens import issue_token
from jobs_proto.job_types import LONGEST_DEADLINE_S
from jobs_proto.output import output_stream
from jobs_proto.stream import DAY_S
from jobs_runtime import commands
from jobs_runtime.bus import ensure_stream
from jobs_runtime.commands import OK, USAGE, Command, load_or_exit
from jobs_runtime.red import with_red_metrics
from jobs_runtime.service import Service, run_service

log = logging.getLogger("gateway")


def _warn_about_auth(settings: Settings) -> None:
    if not settings.jwt_secrets and not settings.auth_jwks_url:
        log.warning("neither AUTH_JWT_SECRET nor AUTH_JWKS_URL: every token will be refused")


def _verifier(settings: Settings) -> TokenVerifier:
    """HS256 with the secrets, and RS256/ES256 with the JWKS keys when `AUTH_JWKS_URL` is set
    (fetched on the first such token, not at startup: the issuer being down must not stop
    the gateway, nor HS256 tokens from working)."""
    jwks = None
    if settings.auth_jwks_url:
        jwks = JwksKeys(
            HttpJwksSource(settings.auth_jwks_url),
            cooldown_s=settings.auth_jwks_refresh_cooldown_s,
        )
    return TokenVerifier(
        settings.jwt_secrets,
        jwks=jwks,
        issuer=settings.auth_jwt_issuer,
        audience=settings.auth_jwt_audience,
        budget_claim=settings.auth_budget_claim,
        leeway_s=settings.auth_jwt_leeway_s,
        job_tokens=JobTokens(
            settings.job_token_secrets,
            ttl_s=settings.job_token_ttl_s,
            leeway_s=settings.auth_jwt_leeway_s,
        ),
    )


async def serve_gateway(service: Service[Settings]) -> None:
    """Serve the HTTP API until `service.stop`, then finish the requests in hand."""
    settings = service.settings
    _warn_about_auth(settings)
    # Running jobs this gateway knows from the announcements and the job-store's replies.
    views = JobViews()
    store = ViewedJobStore(
        NatsJobStore(service.nc, settings.subjects, settings.job_store_timeout_s), views
    )
    keys = await service.set_up(
        "idempotency bucket",
        lambda: idempotency_bucket(
            service.nc,
            settings.jobs_stream,
            replicas=settings.stream_replicas,
            max_bytes=settings.idempotency_bucket_max_bytes,
        ),
    )
    hub = Hub(
        StreamPolicy(
            keepalive_s=settings.sse_keepalive_s,
            queue_size=settings.sse_queue_size,
            retry_ms=settings.sse_retry_ms,
        )
    )
    # The output log `/output` reads; declared here too, so a gateway started before any writer
    # answers a running job's stream from it rather than from a missing stream's errors.
    output_spec = output_stream(
        settings.subjects,
        settings.jobs_stream,
        longest_deadline_s=LONGEST_DEADLINE_S,
        replicas=settings.stream_replicas,
        max_bytes=settings.output_stream_max_bytes,
    )
    await service.set_up(
        f"stream {output_spec.name}", lambda: ensure_stream(service.js, output_spec)
    )
    streams = OpenStreams(settings.user_max_streams, settings.max_streams)
    observer = PrometheusObserver()
    # The count the caps apply to, so the gauge shows how near `MAX_STREAMS` the process is.
    observer.watch_streams(lambda: streams.open, lambda: hub.dropped)
    observer.watch_wanted(lambda: hub.wanted.watched)
    feed = NatsJobFeed(service.nc, settings.subjects, hub, views)
    # The relay reads a prediction's text only while a stream here (or elsewhere) reads it.
    wanted = NatsOutputWanted(
        service.nc, settings.subjects, hub.wanted, settings.output_wanted_every_s, observer
    )
    # What the feed's announcements missed (lost on core NATS), read back every SSE_RESYNC_S.
    resync = StreamResync(
        service.nc,
        settings.subjects,
        hub,
        store,
        observer,
        every_s=settings.sse_resync_s,
        timeout_s=settings.job_store_timeout_s,
    )
    await feed.start()
    ports = GatewayPorts(
        verifier=_verifier(settings),
        bus=JetStreamEventBus(service.nc, service.publisher),
        store=store,
        requested=StreamRequestedLog(
            service.nc, settings.jobs_stream, settings.subjects, settings.job_store_timeout_s
        ),
        max_body_bytes=settings.http_max_body_bytes,
        cors_origins=settings.cors_origin_list,
        keys=KvIdempotencyKeys(service.nc, keys),
        rate=(
            RequestRate(settings.user_requests_per_s, settings.request_burst)
            if settings.user_requests_per_s > 0
            else None
        ),
        spending=Spending(
            NatsBudgets(service.nc, settings.subjects, settings.job_store_timeout_s),
            user_micros=settings.user_budget_micros,
            global_micros=settings.global_budget_micros,
        ),
        open_jobs=(
            OpenJobs(store, settings.user_max_open_jobs) if settings.user_max_open_jobs else None
        ),
        finished=FinishedJobs(settings.job_cache_bytes) if settings.job_cache_bytes else None,
        hub=hub,
        views=views,
        streams=streams,
        output_log=NatsOutputLog(
            service.nc, output_spec.name, settings.subjects, settings.job_store_timeout_s
        ),
        demo_page=settings.demo_page_on,
        observer=observer,
    )

    async def end_streams() -> None:
        # Before uvicorn waits for the requests in hand: open streams would keep it waiting.
        await service.stop.wait()
        hub.stop()

    background = [
        asyncio.create_task(end_streams()),
        asyncio.create_task(feed.watch_reconnects(service.stop)),
        asyncio.create_task(wanted.run(service.stop)),
        asyncio.create_task(resync.run(service.stop)),
    ]
    try:
        app = with_red_metrics(build_app(ports), HTTP_REQUESTS, HTTP_SECONDS)
        await service.serve_http(app, settings.http_port)
    finally:
        for task in background:
            task.cancel()


def _dev_token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sub", default="dev-user", help="the user id (default: dev-user)")
    parser.add_argument(
        "--ttl-days", type=float, default=30.0, help="validity in days (default: 30)"
    )
    parser.add_argument(
        "--budget-usd",
        type=float,
        default=None,
        help="a monthly budget in the token's AUTH_BUDGET_CLAIM claim (default: none)",
    )


def dev_signing_secret(settings: Settings, here: Path) -> tuple[str, str]:
    """The secret `gateway dev-token` signs with, and where it came from: the environment's
    AUTH_JWT_SECRET, else the one `make run` made (`.data/dev-secrets.json` in `here` or a
    folder above it, so a token works with the system `make run` started), else the dev
    default."""
    if settings.auth_jwt_secret is not None:
        return settings.jwt_secrets[0], "AUTH_JWT_SECRET from the environment"
    for folder in (here, *here.parents):
        path = folder / DEV_SECRETS_FILE
        if not path.is_file():
            continue
        try:
            secret = json.loads(path.read_text()).get("jwt_secret")
        except (OSError, ValueError, AttributeError):
            secret = None
        if isinstance(secret, str) and secret:
            return secret, f"make run's dev secret ({path})"
    return DEV_JWT_SECRET, "the built-in dev default (no AUTH_JWT_SECRET, no make run secrets)"


def dev_token(args: argparse.Namespace) -> int:
    """`gateway dev-token`: print a token for local runs; refused outside `APP_ENV=dev`."""
    settings = load_or_exit("gateway", Settings)
    if settings.app_env != "dev":
        print("gateway dev-token: refused, only available with APP_ENV=dev", file=sys.stderr)
        return USAGE
    if not settings.jwt_secrets:
        print("gateway dev-token: AUTH_JWT_SECRET is empty", file=sys.stderr)
        return USAGE
    if not args.sub or args.ttl_days <= 0:
        print("gateway dev-token: --sub must be non-empty and --ttl-days > 0", file=sys.stderr)
        return USAGE
    if args.budget_usd is not None and not 0 <= args.budget_usd <= MAX_BUDGET_USD:
        print(f"gateway dev-token: --budget-usd must be 0 to {MAX_BUDGET_USD}", file=sys.stderr)
        return USAGE
    claims = {} if args.budget_usd is None else {settings.auth_budget_claim: args.budget_usd}
    secret, source = dev_signing_secret(settings, Path.cwd())
    # stderr: stdout is the token alone, for `$(gateway dev-token)`.
    print(f"gateway dev-token: signed with {source}", file=sys.stderr)
    token = issue_token(
        secret,
        subject=args.sub,
        ttl_s=args.ttl_days * DAY_S,
        now=time.time(),
        issuer=settings.auth_jwt_issuer,
        audience=settings.auth_jwt_audience,
        claims=claims,
    )
    print(token)  # the command's output: `make run` prints it as DEV_TOKEN=...
    return OK


def main() -> None:
    commands.main(
        "gateway",
        lambda: run_service("gateway", Settings, serve_gateway),
        [
            Command(
                "dev-token",
                "Print an HS256 token the dev gateway accepts (APP_ENV=dev only).",
                dev_token,
                _dev_token_arguments,
            )
        ],
    )


if __name__ == "__main__":
    main()
