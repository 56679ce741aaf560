"""Installing the system's prerequisites: Debian's prometheus (for `promtool` and the monitoring
test's server) without the exporters it recommends, its own service not left running."""

from collections.abc import Sequence
from pathlib import Path

import pytest

from jobs_testkit import prerequisites


class Recorded:
    """A `Run` that records each command and answers success."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, command: Sequence[str]) -> int:
        self.commands.append(list(command))
        return 0


def test_prometheus_is_installed_without_its_recommendations() -> None:
    run = Recorded()
    found = prerequisites.apt_install(["wrk", "promtool"], run)
    assert run.commands[:3] == [
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "wrk"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"],
    ]
    # Under systemd the service the package started is stopped and disabled; elsewhere
    # (containers, CI here) there is none.
    quieted = [["systemctl", "disable", "--now", "prometheus"]]
    assert run.commands[3:] == (quieted if Path("/run/systemd/system").is_dir() else [])
    assert found["promtool"].path == "/usr/bin/promtool"
    assert found["promtool"].how == "installed from Debian's prometheus"


def test_a_failed_install_names_the_packages() -> None:
    def failing(command: Sequence[str]) -> int:
        return 100 if "--no-install-recommends" in command else 0

    with pytest.raises(prerequisites.Missing, match="apt-get install prometheus failed"):
        prerequisites.apt_install(["promtool"], failing)
