"""The test kit's testcontainers path (`TEST_SERVERS=docker`) runs a real part of the suite, the
end-to-end job flow and the job-store's NATS and migration tests, against NATS and Postgres
containers: the configured images (`TEST_NATS_IMAGE`, `TEST_POSTGRES_IMAGE`, the official ones by
default) where the engine has them, else the local ones `make images` builds. Skipped where no
Docker engine answers, unless JOBS_REQUIRE_DOCKER is set: then that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs_testkit.servers.docker import (
    LOCAL_NATS_IMAGE,
    LOCAL_POSTGRES_IMAGE,
    image_present,
    nats_image,
    postgres_image,
    require_docker,
)

ROOT = Path(__file__).resolve().parents[2]
PART = (
    "tests/e2e/test_job_flow.py",
    "services/job-store/tests/integration/test_migrations.py",
    "services/job-store/tests/integration/test_results_nats.py",
)


@pytest.mark.timeout(900)
def test_a_part_of_the_suite_passes_against_containers() -> None:
    require_docker()
    built = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "images" / "build.py"), "--services"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_NATS_URL", "TEST_DATABASE_URL")}
    env |= {
        "TEST_SERVERS": "docker",
        "TEST_NATS_IMAGE": nats_image() if image_present(nats_image()) else LOCAL_NATS_IMAGE,
        "TEST_POSTGRES_IMAGE": (
            postgres_image() if image_present(postgres_image()) else LOCAL_POSTGRES_IMAGE
        ),
        # Ryuk, testcontainers' reaper, is an image of its own; the servers remove their
        # containers themselves.
        "TESTCONTAINERS_RYUK_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *PART],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in summary, summary
    assert "skipped" not in summary, summary
