# One image per service, built from the repository root with that service's locked
# dependencies alone:
#   docker build --build-arg SERVICE=gateway -t ai-jobs/gateway:0.1.0 .
# SERVICE is a workspace member whose command has the same name: gateway, ai-runner,
# webhook-ingest, job-store or replicate-sim (the simulator, for dev clusters only).
# deploy/tests/test_deploy_image.py replays these steps with uv on every test run; `make images`
# (deploy/images/build.py) builds them all, on local bases where these defaults cannot be pulled.
# No `# syntax=` line: every BuildKit's built-in frontend reads this file, and naming a frontend
# image would make the build pull it, which fails where no registry is reachable.

# checkov:skip=CKV_DOCKER_7: the bases are build arguments (checkov cannot read them), their defaults pinned below.
# checkov:skip=CKV_DOCKER_2: Kubernetes ignores HEALTHCHECK; the manifests probe /healthz and /readyz on the admin port.

# The bases are build arguments: any image with a Python 3.11 on its PATH, `groupadd` and
# `useradd`, and any image with /uv, will do.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# The same Python image in both stages: /app/bin/python links to its interpreter.
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
# Bytecode is compiled here, once: at run time the root filesystem is read-only.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app
COPY --from=uv /uv /usr/local/bin/uv
WORKDIR /src
# The third-party dependencies first, from the lock file and every member's pyproject.toml
# (uv checks the whole workspace against the lock), so a code change reuses this layer.
COPY pyproject.toml uv.lock ./
COPY proto/pyproject.toml proto/
COPY runtime/pyproject.toml runtime/
COPY testkit/pyproject.toml testkit/
COPY simulator/pyproject.toml simulator/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/ai-runner/pyproject.toml services/ai-runner/
COPY services/webhook-ingest/pyproject.toml services/webhook-ingest/
COPY services/job-store/pyproject.toml services/job-store/
COPY bench/pyproject.toml bench/
COPY chaos/pyproject.toml chaos/
COPY ops/pyproject.toml ops/
# Behind a proxy that re-signs TLS, `make images` hands in the CA bundle SSL_CERT_FILE names as
# the secret `ca-certificates`: read during the step, never stored in a layer.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca-certificates \
    test -n "${SERVICE}" \
    && if [ -s /run/secrets/ca-certificates ]; then export SSL_CERT_FILE=/run/secrets/ca-certificates; fi \
    && uv sync --locked --package "${SERVICE}" --no-dev --no-install-workspace
COPY . .
# Non-editable: the workspace packages are copied into /app, which is all the final stage takes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export SSL_CERT_FILE=/run/secrets/ca-certificates; fi \
    && uv sync --locked --package "${SERVICE}" --no-dev --no-editable \
    && ln -s "/app/bin/${SERVICE}" /app/bin/service

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="ai-jobs ${SERVICE}" \
      org.opencontainers.image.source="https://github.com/example/ai-jobs"
# APP_ENV=prod: a container missing a required setting stops with one line naming it
# instead of reaching for the local defaults of a development machine.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/app/bin:$PATH \
    APP_ENV=prod
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
# Owned by root and only readable by the service's user: the code cannot be changed at run time.
COPY --from=build /app /app
USER 10001:10001
ENTRYPOINT ["/app/bin/service"]
