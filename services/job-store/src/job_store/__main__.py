"""Entry point of the `job-store` command: starts the service under the shared runtime."""

from __future__ import annotations

from job_store.config import Settings
from jobs_runtime.service import idle, run


def main() -> None:
    run("job-store", Settings, idle)


if __name__ == "__main__":
    main()
