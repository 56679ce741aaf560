"""One tiny run of every scenario for the whole test session: the start-ups (servers, the
system, the baseline) are most of a tiny run, so the tests share them and each asserts on its
own scenarios' rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobs_bench.__main__ import run
from jobs_bench.scenarios import SCENARIOS


@dataclass(frozen=True)
class TinyRun:
    rows: list[dict[str, Any]]
    extras: dict[str, Any]
    results: Path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    results = tmp_path_factory.mktemp("bench") / "results"
    extras: dict[str, Any] = {}
    rows = run("tiny", list(SCENARIOS), results, extras)
    return TinyRun(rows, extras, results)
