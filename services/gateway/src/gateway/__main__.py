"""Entry point of the `gateway` command: starts the service under the shared runtime."""

from __future__ import annotations

from gateway.config import Settings
from jobs_runtime.service import idle, run


def main() -> None:
    run("gateway", Settings, idle)


if __name__ == "__main__":
    main()
