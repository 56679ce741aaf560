# The project's commands; `make help` lists them. A fresh clone needs only Python 3.11+ and make:
# uv is installed into .tools/ when it is not on the PATH.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --no-sync
STRICT_PACKAGES := -p jobs_proto -p jobs_runtime -p replicate_sim -p jobs_ops
PACKAGES := -p jobs_testkit -p jobs_bench -p jobs_chaos -p gateway -p ai_runner -p webhook_ingest -p job_store
# Every module of a service outside adapters/ and __main__: the handlers and the pure logic they use.
PURE_MODULES := $(shell find services/*/src/* -name '*.py' -not -path '*/adapters/*' -not -name '__main__.py' -not -name '__init__.py' | sort)
TEST_DIRS := proto/tests runtime/tests testkit/tests simulator/tests tests $(wildcard deploy/tests bench/tests chaos/tests ops/tests services/*/tests)

.PHONY: help uv sync prerequisites lint typecheck schema nats-users dev-secrets deploy-check images test check-fresh run bench chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

uv: $(UV) ## install uv into .tools/ when it is missing

sync: uv ## install every workspace member from the lock file
	$(UV) sync --all-packages --locked --quiet

prerequisites: sync ## Node (from PyPI), wrk, Chromium and Prometheus: found, or installed from Debian as root
	$(RUN) python -m jobs_testkit.prerequisites

lint: sync ## ruff: lint and formatting
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: sync ## mypy: strict on proto/, the runtime library, jobsctl and every service module outside adapters/
	$(RUN) mypy --strict $(STRICT_PACKAGES)
	$(RUN) mypy $(PACKAGES)
	$(if $(PURE_MODULES),$(RUN) mypy --strict $(PURE_MODULES))
	$(RUN) mypy $(filter-out services/%,$(TEST_DIRS))
	$(RUN) mypy --strict deploy/images/build.py
	@# One run per service, from its folder: its tests import their fakes relatively
	@# (`from ..fakes import ...`), which mypy resolves only under a base without a hyphen. One
	@# cache for all runs halves a fresh clone's type check; an entry made from another service's
	@# file of the same module name is seen as stale (mypy checks the path) and checked again.
	$(foreach d,$(filter services/%,$(TEST_DIRS)),(cd $(dir $(d)) && $(RUN) mypy --cache-dir $(CURDIR)/.mypy_cache tests) &&) true

schema: sync ## regenerate proto/schema from the msgspec Structs
	$(RUN) python -m jobs_proto.schema proto/schema/jobs.schema.json

nats-users: sync ## regenerate deploy/base/nats/users.conf from proto's NATS allow lists
	$(RUN) python -m jobs_proto.permissions deploy/base/nats/users.conf

dev-secrets: sync ## random secrets for deploy/overlays/dev, once (git ignores them)
	$(RUN) python -m jobs_testkit.cluster_secrets deploy/overlays/dev/secrets

deploy-check: sync ## deploy/: render the overlays, validate, checkov, hadolint, image installs
	$(RUN) pytest deploy/tests -q

images: sync ## every service's image (ai-jobs/<service>:0.1.0 and :dev), NATS and Postgres for tests; local bases where none can be pulled
	UV=$(UV) $(RUN) python deploy/images/build.py

# Two workers a core: most tests wait on servers and processes (two workers left this two-core
# machine half idle, load 1.0), so four cut the suite from about 12 to 8 minutes here. Each
# worker has its own NATS, Postgres and slice of listening ports. A module stays on one worker
# (module-scoped systems), and modules go out in testpaths' order, the longest first, not
# xdist's largest-module-first.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))

test: prerequisites lint typecheck ## the whole suite (deploy/tests included) against real, throwaway NATS and Postgres
	$(RUN) pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=20

check-fresh: sync ## a fresh clone with no .venv, .tools or prerequisites on PATH gets them all from `make prerequisites`
	$(RUN) pytest tests/setup -q

run: sync ## the whole system locally: NATS, Postgres, the simulator and the four services
	$(RUN) python -m jobs_testkit.devrun

bench: sync ## the benchmark suite at full size: a table, and JSON + PNG under bench/results/
	$(RUN) python -m jobs_bench --size full

chaos: sync ## the fault-injection suite at full length; prints its table
	$(RUN) python -m jobs_chaos --size full

clean: ## remove the virtualenv, caches and local data
	rm -rf .venv .tools .data .mypy_cache .ruff_cache .pytest_cache .hypothesis
