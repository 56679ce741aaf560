"""The JavaScript client's offline tests (`node --test clients/js/test/offline/*.test.mjs`): the
SSE parser, code-point offsets, resuming `/output`, token refresh, the error kinds, polling and
back to streaming, pausing, `watchJobs`, against local Node servers speaking the contract's
format; and the package as `npm pack` makes it (installed, imported, type-checked). No stack:
they need Node and the client's devDependencies (`npm ci`, at the lock file's versions)."""

import os
import subprocess
from pathlib import Path

from jobs_testkit import prerequisites

REPOSITORY = Path(__file__).resolve().parents[2]
CLIENT = REPOSITORY / "clients/js"


def test_the_javascript_client_offline() -> None:
    node = Path(prerequisites.node().path)
    environment = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ['PATH']}"}
    installed = CLIENT / "node_modules" / ".package-lock.json"
    lock = CLIENT / "package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            [str(node.parent / "npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLIENT,
            env=environment,
            check=True,
            timeout=100,
        )
    tests = sorted(str(p) for p in (CLIENT / "test/offline").glob("*.test.mjs"))
    assert tests
    result = subprocess.run(
        # Files named one by one: Node 22 and later no longer read a folder given to --test.
        [str(node), "--test", "--test-reporter=tap", *tests],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# pass 31" in result.stdout, result.stdout
    assert "# fail 0" in result.stdout, result.stdout
