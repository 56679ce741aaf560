"""Settings of the gateway service, from the environment."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, ClassVar, Final

import msgspec

from jobs_proto.output import OUTPUT_WANTED_EVERY_S
from jobs_proto.spend import usd_to_micros
from jobs_proto.stream import DAY_S
from jobs_runtime.secrets import HS256Secret
from jobs_runtime.settings import Port, ServiceSettings, SettingsError

from .budgets import DEFAULT_BUDGET_CLAIM, MAX_BUDGET_USD
from .job_tokens import DEFAULT_JOB_TOKEN_TTL_S
from .tokens import DEFAULT_LEEWAY_S

# Signs `gateway dev-token` output and the tokens of local runs when AUTH_JWT_SECRET is unset;
# published, so prod refuses it (`jobs_runtime.secrets`).
DEV_JWT_SECRET: Final = "dev-only-jwt-secret"
# Where `make run` keeps the secrets of the system it starts (`jobs_testkit.devrun`), relative
# to the folder it runs in: `gateway dev-token` signs with its `jwt_secret`.
DEV_SECRETS_FILE: Final = Path(".data", "dev-secrets.json")
# Signs job tokens when JOB_TOKEN_SECRET is unset in dev; published, so prod refuses it.
DEV_JOB_TOKEN_SECRET: Final = "dev-only-job-token-secret"
# A JWT claim name: what `AUTH_BUDGET_CLAIM` may be.
_CLAIM_NAME: Final = r"^[A-Za-z0-9_:./-]{1,100}$"


class Settings(ServiceSettings, frozen=True):
    """The gateway's settings; `APP_ENV=prod` requires NATS_URL, AUTH_JWT_SECRET or
    AUTH_JWKS_URL, AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE, an https:// AUTH_JWKS_URL, and
    JOB_TOKEN_SECRET."""

    required_in_prod: ClassVar[tuple[str, ...]] = (
        *ServiceSettings.required_in_prod,
        "AUTH_JWT_SECRET|AUTH_JWKS_URL",
        # Without them any token signed by the key is good here, whoever it was issued by and
        # for: a key shared with another service or tenant would let its tokens in.
        "AUTH_JWT_ISSUER",
        "AUTH_JWT_AUDIENCE",
        "JOB_TOKEN_SECRET",
    )

    admin_port: Port = 9000
    http_port: Port = 8000
    # Comma-separated: the first signs dev tokens, all verify (rotation: add the new one first).
    # Unset: DEV_JWT_SECRET in dev, none in prod (where AUTH_JWKS_URL may be enough alone).
    auth_jwt_secret: HS256Secret | None = None
    # RS256/ES256 tokens verify with the keys served here (`{"keys": [...]}`), besides HS256.
    auth_jwks_url: str = ""
    # At most one JWKS fetch per this many seconds (a token with an unknown `kid` triggers one).
    auth_jwks_refresh_cooldown_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    # Clock skew allowed between a token's issuer and this host on `exp` and `nbf`, seconds.
    auth_jwt_leeway_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = DEFAULT_LEEWAY_S
    # Job tokens (`POST /api/jobs/{jobId}/token`): signed with their own secret, never a
    # session's, so neither kind can pass for the other; comma-separated like
    # AUTH_JWT_SECRET (the first signs, all verify). Unset: DEV_JOB_TOKEN_SECRET in dev.
    job_token_secret: HS256Secret | None = None
    # How long a job token reads its job: long enough for a page to follow a job, short
    # enough that a leaked one soon stops working (a page asks for a new one).
    job_token_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=DAY_S)] = DEFAULT_JOB_TOKEN_TTL_S
    # Per-user limits, `429` + `Retry-After` (0: off). Requests per second are counted by
    # each replica on its own; the burst is how many may come at once (0: twice the rate,
    # at least 1). Open jobs are those `pending` or `processing`.
    user_requests_per_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    user_requests_burst: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    user_max_open_jobs: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Budgets (`402` past them; 0: none). A user's per calendar month (UTC), overridden for a
    # user by a non-negative number in their token's `AUTH_BUDGET_CLAIM` claim (a SaaS puts
    # each customer's plan there); everyone's together per UTC day.
    user_budget_usd: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    auth_budget_claim: Annotated[str, msgspec.Meta(pattern=_CLAIM_NAME)] = DEFAULT_BUDGET_CLAIM
    global_budget_usd_per_day: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # Open event and output streams, per user (`429`) and in this process (`503`), both with
    # `Retry-After` (0: none). On by default, unlike the limits above: a stream never ends by
    # itself and holds memory (about 24 KiB each, measured by the benchmark), so one token
    # could otherwise open streams until the process runs out of memory. 20 is several tabs'
    # worth (a page needs one `/api/events`); 4,000 is about 94 MiB. deploy/base sets 6,000
    # and sizes the pod's memory from it (the arithmetic is in gateway.yaml, checked by
    # deploy/tests).
    user_max_streams: Annotated[int, msgspec.Meta(ge=0)] = 20
    max_streams: Annotated[int, msgspec.Meta(ge=0)] = 4000
    # How long a request to the job-store (a read, a budget, the resync's versions), and a read
    # of the JOBS or output stream, may take before the caller is answered `503` (at most a
    # minute: a client waiting longer has long given up).
    job_store_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    # Memory for the encoded answers of finished jobs (they never change); 0: no cache.
    job_cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * 1024 * 1024
    http_max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024
    # Comma-separated origins (`https://app.example`) browsers may call the API from; empty:
    # none, the API is then for same-origin pages and non-browser clients only.
    cors_origins: str = ""
    # Event streams (`/api/jobs/{jobId}/events`, `/api/events`): a comment line after this
    # many quiet seconds keeps proxies from closing them; a client more than
    # `SSE_QUEUE_SIZE` updates behind is dropped (it reconnects); on shutdown streams end
    # with `retry: SSE_RETRY_MS`.
    sse_keepalive_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    sse_queue_size: Annotated[int, msgspec.Meta(ge=1)] = 256
    sse_retry_ms: Annotated[int, msgspec.Meta(ge=0)] = 1000
    # Every this many seconds the running jobs open streams wait for are checked against the
    # job-store's stored versions (one request per 1,000 jobs, none while no stream is open):
    # a change whose core NATS announcement was lost still reaches its streams, this late at
    # most (0: off, a lost terminal change then leaves its streams open until the client goes).
    sse_resync_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    # A running job's text some stream here reads is announced to the relay (`OutputWanted`)
    # at once and again every this many seconds while read. The relay times its patience by
    # proto's `OUTPUT_WANTED_EVERY_S`: change this only in tests.
    output_wanted_every_s: Annotated[float, msgspec.Meta(gt=0)] = OUTPUT_WANTED_EVERY_S
    # The demo page at `/`; unset: on in dev, off in prod.
    demo_page: bool | None = None

    @property
    def demo_page_on(self) -> bool:
        return self.demo_page if self.demo_page is not None else self.app_env == "dev"

    @property
    def user_budget_micros(self) -> int | None:
        """`USER_BUDGET_USD` in micro-dollars; `None`: no budget unless a token names one."""
        return usd_to_micros(self.user_budget_usd) if self.user_budget_usd > 0 else None

    @property
    def global_budget_micros(self) -> int | None:
        """`GLOBAL_BUDGET_USD_PER_DAY` in micro-dollars; `None`: none."""
        if self.global_budget_usd_per_day <= 0:
            return None
        return usd_to_micros(self.global_budget_usd_per_day)

    @property
    def request_burst(self) -> float:
        """Requests a user may send at once before `USER_REQUESTS_PER_S` applies."""
        return self.user_requests_burst or max(1.0, 2 * self.user_requests_per_s)

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The allowed origins, trimmed and without a trailing `/` (browsers send none)."""
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @property
    def jwt_secrets(self) -> tuple[str, ...]:
        """The HS256 secrets that verify tokens, in order; the dev default only under dev."""
        if self.auth_jwt_secret is None:
            return (DEV_JWT_SECRET,) if self.app_env == "dev" else ()
        return tuple(s.strip() for s in self.auth_jwt_secret.split(",") if s.strip())

    @property
    def job_token_secrets(self) -> tuple[str, ...]:
        """The secrets of job tokens, the signing one first; the dev default only under dev."""
        if self.job_token_secret is None:
            return (DEV_JOB_TOKEN_SECRET,) if self.app_env == "dev" else ()
        return tuple(s.strip() for s in self.job_token_secret.split(",") if s.strip())

    def check(self) -> None:
        super().check()
        for name, usd in (
            ("USER_BUDGET_USD", self.user_budget_usd),
            ("GLOBAL_BUDGET_USD_PER_DAY", self.global_budget_usd_per_day),
        ):
            # `inf` passes `ge=0`; a budget must be a real amount of money.
            if not math.isfinite(usd) or usd > MAX_BUDGET_USD:
                raise SettingsError(f"{name}: must be a number of dollars up to {MAX_BUDGET_USD}")
        if not self.job_token_secrets:
            raise SettingsError("JOB_TOKEN_SECRET: empty")
        if set(self.job_token_secrets) & set(self.jwt_secrets):
            # Distinct claims keep the kinds apart already; one key for both would still make
            # a leak of either key a leak of both.
            raise SettingsError("JOB_TOKEN_SECRET: must differ from every AUTH_JWT_SECRET")
        if self.app_env == "prod" and not self.jwt_secrets and not self.auth_jwks_url:
            raise SettingsError("AUTH_JWT_SECRET: empty, and no AUTH_JWKS_URL (APP_ENV=prod)")
        if self.auth_jwks_url and not self.auth_jwks_url.startswith(("https://", "http://")):
            raise SettingsError("AUTH_JWKS_URL: must be an http:// or https:// URL")
        if (
            self.app_env == "prod"
            and self.auth_jwks_url
            and not self.auth_jwks_url.startswith("https://")
        ):
            # Over plain HTTP anyone on the path can swap the keys and mint tokens.
            raise SettingsError("AUTH_JWKS_URL: must be an https:// URL when APP_ENV=prod")
