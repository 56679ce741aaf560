"""The JavaScript client's offline tests (`node --test clients/js/test/offline/*.test.mjs`): the
SSE parser, code-point offsets and resuming `/output` across dropped connections, against a
local Node server speaking the contract's format. No stack: they need nothing but Node."""

import subprocess
from pathlib import Path

from jobs_testkit import prerequisites

REPOSITORY = Path(__file__).resolve().parents[2]


def test_the_javascript_client_offline() -> None:
    tests = sorted(str(p) for p in (REPOSITORY / "clients/js/test/offline").glob("*.test.mjs"))
    assert tests
    result = subprocess.run(
        # Files named one by one: Node 22 and later no longer read a folder given to --test.
        [prerequisites.node().path, "--test", "--test-reporter=tap", *tests],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# pass 25" in result.stdout, result.stdout
    assert "# fail 0" in result.stdout, result.stdout
