"""Reference data from outside the project (Replicate's OpenAPI description, signing vectors).

It lives in `shared/vectors/` beside the checkout (`SHARED_VECTORS_DIR` names another place),
so tests check the project against the published material rather than a copy of our own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[3]


def vectors_dir() -> Path:
    configured = os.environ.get("SHARED_VECTORS_DIR")
    directory = Path(configured) if configured else _REPO.parent / "shared" / "vectors"
    if not directory.is_dir():
        raise FileNotFoundError(
            f"reference vectors not found at {directory}: set SHARED_VECTORS_DIR"
        )
    return directory


def load(name: str) -> Any:
    """One vector file, parsed (`replicate-openapi.json`, `standard-webhooks.json`)."""
    return json.loads((vectors_dir() / name).read_text(encoding="utf-8"))
