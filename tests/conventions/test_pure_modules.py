"""The conventions a newcomer relies on (docs/conventions.md), checked: outside `adapters/` and
`__main__`, no module of a service pulls in an I/O library, directly or through the runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = ("nats", "asyncpg", "httpx", "aiohttp", "replicate", "starlette", "uvicorn")


def _pure_modules() -> list[str]:
    modules = []
    for package in sorted((ROOT / "services").glob("*/src/*")):
        if not (package / "__init__.py").exists():
            continue
        for path in sorted(package.rglob("*.py")):
            parts = path.relative_to(package.parent).with_suffix("").parts
            if "adapters" in parts or parts[-1] == "__main__":
                continue
            modules.append(".".join(p for p in parts if p != "__init__") or parts[0])
    return modules


def test_pure_modules_are_found() -> None:
    modules = _pure_modules()
    for service in ("gateway", "ai_runner", "job_store", "webhook_ingest"):
        assert {f"{service}.ports", f"{service}.config"} <= set(modules), service
    assert len(modules) > 40  # the handlers of every service, whatever their modules' names


@pytest.mark.parametrize("module", _pure_modules())
def test_a_module_outside_adapters_imports_no_io_library(module: str) -> None:
    # A fresh interpreter: this process has imported every library already.
    probe = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(IO_LIBRARIES)!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"{module} imports {done.stdout.strip()}"
