"""Reference data from outside the project (Replicate's OpenAPI description, signing vectors).

The published copy lives in `shared/vectors/` beside the checkout (`SHARED_VECTORS_DIR` names
another place); `testkit/reference/` holds a copy so a clone on its own still tests, and a
test fails when that copy and the published one differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[3]
COPY_DIR = _REPO / "testkit" / "reference"


def published_dir() -> Path | None:
    """Where the published vectors are, when they are reachable from here."""
    configured = os.environ.get("SHARED_VECTORS_DIR")
    directory = Path(configured) if configured else _REPO.parent / "shared" / "vectors"
    return directory if directory.is_dir() else None


def vectors_dir() -> Path:
    return published_dir() or COPY_DIR


def load(name: str) -> Any:
    """One vector file, parsed (`replicate-openapi.json`, `standard-webhooks.json`)."""
    return json.loads((vectors_dir() / name).read_text(encoding="utf-8"))
