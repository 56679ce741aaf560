"""Entry point of the `webhook-ingest` command: starts the service under the shared runtime."""

from __future__ import annotations

from jobs_runtime.service import idle, run
from webhook_ingest.config import Settings


def main() -> None:
    run("webhook-ingest", Settings, idle)


if __name__ == "__main__":
    main()
