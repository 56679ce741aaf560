"""JSON Schema of every event, HTTP body and job input, generated from the Structs.

`python -m jobs_proto.schema PATH` writes it; a test fails when the committed file is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from jobs_proto import api
from jobs_proto.events import EVENT_TYPES, AnyJobEvent
from jobs_proto.job_types import JOB_TYPES

_API_TYPES: tuple[type[Any], ...] = (
    api.CreateJob,
    api.JobAccepted,
    api.JobView,
    api.JobPage,
    api.JobProgress,
    api.JobChanged,
    api.Problem,
    api.HealthStatus,
    api.GetJob,
    api.JobReply,
    api.ListJobs,
    api.FindStuckJobs,
    api.StuckJobs,
    api.GetJobVersions,
    api.JobVersions,
    api.GetJobHistory,
    api.JobHistory,
)


def document() -> dict[str, Any]:
    """One JSON Schema document: the event union at the root, every type under `$defs`."""
    inputs = tuple(t.input_type for t in JOB_TYPES.values())
    (root, *_), defs = msgspec.json.schema_components(
        (AnyJobEvent, *EVENT_TYPES, *_API_TYPES, *inputs), ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:ai-jobs:proto",
        "title": "Job events (root) and every API body and job input ($defs)",
        **root,
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m jobs_proto.schema PATH", file=sys.stderr)
        return 2
    Path(args[0]).write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
