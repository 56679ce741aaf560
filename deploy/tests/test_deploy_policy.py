"""Policy scans: checkov over both rendered overlays and the Dockerfile (its skips each
explained), hadolint over the Dockerfile, and the Dockerfile's own promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from .conftest import DEPLOY, ROOT, Rendered

DOCKERFILE = ROOT / "Dockerfile"
CHECKOV_CONFIG = DEPLOY / ".checkov.yaml"


def tool(name: str) -> str:
    # Installed into the project's environment (the dev and deploy dependency groups).
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is missing: run `make sync`"
    return str(path)


def test_checkov_passes_on_the_rendered_overlays_and_the_dockerfile(
    rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    for name, r in rendered.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(r.objects))
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.read_text())
    done = subprocess.run(
        [tool("checkov"), "--config-file", str(CHECKOV_CONFIG), "-d", str(tmp_path), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    for report in reports:
        summary = report["summary"]
        assert summary["failed"] == 0, report["check_type"]
        assert summary["passed"] > 0, report["check_type"]
        assert summary["parsing_errors"] == 0, report["check_type"]


def test_every_skipped_check_is_explained() -> None:
    # A global skip has a comment right above it in the checkov configuration...
    lines = CHECKOV_CONFIG.read_text().splitlines()
    skips = [i for i, line in enumerate(lines) if re.match(r"\s+- CKV", line)]
    assert skips
    for i in skips:
        assert lines[i - 1].strip().startswith("#"), lines[i]
    # ...and a skip for one object carries its reason.
    for path in [*DEPLOY.rglob("*.yaml"), DOCKERFILE]:
        for match in re.finditer(
            r"checkov(?:\.io/skip\d+|:skip)[:=](CKV\w+)(.*)", path.read_text()
        ):
            reason = match[2].lstrip("=: ")
            assert len(reason) > 10, (path, match[1])


def test_hadolint_passes_on_the_dockerfile() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_builds_one_service_from_the_lock_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.M)
    assert [s[1] for s in stages] == ["uv", "build", "runtime"]
    # The same interpreter in the build and runtime stages: the venv's python links to it.
    assert stages[1][0] == stages[2][0]
    runtime = text[text.index("AS runtime") :]
    assert "--locked" in text
    assert "--no-dev" in text
    assert '--package "${SERVICE}"' in text
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime
    # Only the installed environment reaches the final stage, not the sources or uv.
    assert re.findall(r"^COPY (.*)", runtime, re.M) == ["--from=build /app /app"]
    user = re.findall(r"^USER (\d+)", runtime, re.M)
    assert user
    assert int(user[-1]) >= 10000
    assert re.search(r'^ENTRYPOINT \["/app/bin/service"\]', runtime, re.M)
    assert 'ln -s "/app/bin/${SERVICE}" /app/bin/service' in text
