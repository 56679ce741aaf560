"""Entry point of the `ai-runner` command: starts the service under the shared runtime."""

from __future__ import annotations

from ai_runner.config import Settings
from jobs_runtime.service import idle, run


def main() -> None:
    run("ai-runner", Settings, idle)


if __name__ == "__main__":
    main()
